"""Crash-proof releases (issue 5): SIGKILL at every journal boundary and at random instants,
Ctrl-C, and journal files that are not journals.

The crashes drive the CLI as a separate process (marked `slow` and `e2e`) on a copy of the
embedded demo (local hosts, SQLite); the runs around them, and the journals that are not
journals, run release in this process. The cases start from shared baselines copied with their .release state (v2.3 applied and
a new orders revision, so that v2.4 migrates a database too; and v2.4 applied on top), which saves
one or two applies per case.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

from helpers import (HOST_SERVICES, HOSTS, SERVICES, Baselines, add_notes_revision, cli, cli_json, clone, copy_demo,
                     current, events, journal_rows, revision, run, schema, slow_deploys, spawn, v24_steps, wait_for)
from orchestrator import commands
from orchestrator.lifecycle import Phase
from orchestrator.runs import changes_to_revert

APPLY, REVERT = Phase.APPLY, Phase.REVERT
from orchestrator.faults import BOUNDARIES
from orchestrator.journal import Journal

DATABASES = {"accounts-db": "accounts.db", "orders-db": "orders.db"}

# -- reading the state back ------------------------------------------------------------------




def snapshot(root: Path) -> dict[str, Any]:
    """What is really in place: each host's `current` link, each database's revision and tables."""
    out: dict[str, Any] = {f"{s}@{h}": current(root, h, s) for s, h in HOST_SERVICES}
    for db, file in DATABASES.items():
        out[db] = (revision(root / ".release" / file), schema(root / ".release" / file))
    return out





def status(root: Path) -> dict[str, Any]:
    return commands.status(root)


def starts(root: Path, host: str, action: str, service: str, version: str | None = None) -> int:
    return sum(1 for _ts, what, a, s, v in events(root, host)
               if what == "start" and a == action and s == service and version in (None, v))


def both(*calls: Callable[[], Any]) -> list[Any]:
    """Independent CLI runs on two copies at once: the machine has two cores."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


def start(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    """The CLI in a session of its own, as a terminal runs it: killpg reaches it and its
    commands, never pytest."""
    err = root.parent / f"{root.name}-stderr.txt"
    return spawn(root, *args, env=env, stderr_file=err, session=True), err




def running(root: Path) -> list[tuple[str, str]]:
    """(host, service) of the v2.4 deploys that started and have not ended yet."""
    out = []
    for h in HOSTS:
        open_ = {}
        for _ts, what, action, svc, version in events(root, h):
            if action == "deploy" and version == "v2.4":
                open_[svc] = open_.get(svc, 0) + (1 if what == "start" else -1)
        out += [(h, s) for s, n in open_.items() if n > 0]
    return out


def leftover_commands(root: Path) -> list[psutil.Process]:
    """Processes still running in one of the copy's host directories."""
    hosts = str(root / ".release" / "hosts")
    out = []
    for p in psutil.process_iter():
        try:
            if p.cwd().startswith(hosts):
                out.append(p)
        except psutil.Error:
            pass
    return out


# -- baselines ---------------------------------------------------------------------------------


Base = Baselines[Path]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    tmp = tmp_path_factory.mktemp("crash-base")
    # Processes of their own: a record names its run's PID, and a copy whose run is gone must
    # read `interrupted` where it is left in progress (pytest's PID would read as still running).
    v23 = copy_demo(tmp / "v23")
    cli("apply", "v2.3", cwd=v23, check=0)
    add_notes_revision(v23)
    v24 = clone(v23, tmp / "v24")
    cli("apply", "v2.4", cwd=v24, check=0)
    s23, s24 = snapshot(v23), snapshot(v24)
    assert s23["orders-db"][0] == "o3_status" and s24["orders-db"][0] == "o4_notes"
    assert "order_notes" in s24["orders-db"][1] and "order_notes" not in s23["orders-db"][1]
    assert all(s23[f"{s}@{h}"] == "v2.3" and s24[f"{s}@{h}"] == "v2.4" for s, h in HOST_SERVICES)
    return Base(v23, v24, s23, s24)


def assert_reverted(root: Path, base: Base) -> None:
    assert snapshot(root) == base.s23
    st = status(root)
    assert (st["release"], st["state"]) == ("v2.4", "reverted")
    assert st["services"] == {s: {h: "v2.3" for h in hosts} for s, hosts in SERVICES.items()}
    assert st["databases"] == {"accounts-db": "a3_sessions", "orders-db": "o3_status"}
    assert journal_rows(root, "select state, revert_state from releases where name='v2.4'") == [("reverted", "done")]


def assert_applied(root: Path, base: Base) -> None:
    assert snapshot(root) == base.s24
    st = status(root)
    assert (st["release"], st["state"]) == ("v2.4", "applied")
    assert st["services"] == {s: {h: "v2.4" for h in hosts} for s, hosts in SERVICES.items()}


def in_place(root: Path, node: str, where: str) -> Any:
    return revision(root / ".release" / DATABASES[node]) if node in DATABASES else current(root, where, node)


def assert_killed_at(root: Path, phase: str, boundary: str, node: str, where: str,
                     old: dict[str, Any], new: dict[str, Any]) -> None:
    """The fault fired exactly where asked: the journal and the host/database agree on it."""
    key = node if node in DATABASES else f"{node}@{where}"
    before, after = (old[key][0], new[key][0]) if node in DATABASES else (old[key], new[key])
    col = "revision" if node in DATABASES else "host"
    statuses = [r[3] for r in v24_steps(root, phase, f"node='{node}' and {col}='{where}'")]
    assert statuses == {"before-intent": [], "after-intent": ["intent"], "after-command": ["intent"],
                        "after-outcome": ["ok"]}[boundary]
    # after-intent: the command never ran; after-command: it ran, but the journal cannot know.
    assert in_place(root, node, where) == (before if boundary in ("before-intent", "after-intent") else after)


# -- SIGKILL at each journal boundary ---------------------------------------------------------

# First wave, a middle service, a database revision, the last wave.
APPLY_STEPS = ["catalog@app1", "orders@app2", "orders-db@o4_notes", "web@edge1"]


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("step", APPLY_STEPS)
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_sigkill_during_apply_then_revert_or_resume(base: Base, tmp_path: Path, boundary: str, step: str) -> None:
    node, _, where = step.partition("@")
    crashed = clone(base.v23, tmp_path / "crashed")
    proc = cli("apply", "v2.4", cwd=crashed, env={"RELEASE_FAULT": f"{boundary}:{step}"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert_killed_at(crashed, APPLY, boundary, node, where, base.s23, base.s24)
    assert status(crashed)["state"] == "interrupted"  # in_progress, and its process is gone
    touched = {(n, h) for n, h, _r, _s in v24_steps(crashed, APPLY, "kind='service'")}
    done = {(n, h) for n, h, _r, s in v24_steps(crashed, APPLY, "kind='service'") if s == "ok"}

    # One copy is reverted, the other resumed: both from the same crash.
    resumed = clone(crashed, tmp_path / "resumed")
    reverted, applied = both(lambda: cli("revert", cwd=crashed), lambda: cli("apply", "v2.4", cwd=resumed))

    assert reverted.returncode == 0, reverted.stderr
    assert_reverted(crashed, base)
    # Exactly what may have happened is undone: a host the release never reached runs no revert.
    for s, h in HOST_SERVICES:
        assert starts(crashed, h, "revert", s) == (1 if (s, h) in touched else 0), (s, h)
    # No manual unlock was needed: the dead holder's lock was taken over, and that is journaled.
    assert [e for e, in journal_rows(crashed, "select event from events")] == ["lock_takeover"]

    assert applied.returncode == 0, applied.stderr
    assert_applied(resumed, base)
    assert [e for e, in journal_rows(resumed, "select event from events")] == ["lock_takeover"]
    assert journal_rows(resumed, "select count(*) from releases where name='v2.4'") == [(1,)]
    # Done steps are skipped; in-doubt ones run again.
    for s, h in done:
        assert starts(resumed, h, "deploy", s, "v2.4") == 1, (s, h)
    # The resumed release still knows what came before its first attempt.
    j = Journal.open(f"sqlite:///{resumed / '.release' / 'journal.db'}", create=False)
    assert j is not None
    try:
        services, databases = changes_to_revert(j.steps(j.latest().id, APPLY), [])
    finally:
        j.close()
    assert {(c.node, c.host): c.restore for cs in services.values() for c in cs} == {k: "v2.3" for k in HOST_SERVICES}
    assert databases == {"orders-db": "o3_status"}


# Revert runs dependents first: web is among the first, catalog the last, orders-db in between.
REVERT_POINTS = [(b, "orders-db@o4_notes") for b in BOUNDARIES] + [
    ("after-intent", "web@edge1"), ("after-command", "web@edge1"),
    ("before-intent", "catalog@app2"), ("after-outcome", "catalog@app2"),
]


def check_revert_again(root: Path, base: Base, first_ok: set[tuple[str, str]],
                       touched: set[tuple[str, str]] | None = None) -> None:
    assert_reverted(root, base)
    for s, h in HOST_SERVICES:
        # A host whose revert finished is not reverted again; one in doubt may be, once more;
        # one the apply never reached is never reverted.
        n = starts(root, h, "revert", s)
        if touched is not None and (s, h) not in touched:
            assert n == 0, (s, h)
        else:
            assert (n == 1) if (s, h) in first_ok else (1 <= n <= 2), (s, h, n)
    # Never downgraded twice: only o4_notes was ever downgraded, and the schema (in the
    # snapshot above) is o3_status's whole, orders.status column included.
    db = v24_steps(root, REVERT, "node='orders-db'")
    assert db and {r for _n, _h, r, _s in db} == {"o4_notes"}
    assert sum(s == "ok" for *_x, s in db) <= 1


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("boundary,step", REVERT_POINTS)
def test_sigkill_during_revert_then_revert_again(base: Base, tmp_path: Path, boundary: str, step: str) -> None:
    node, _, where = step.partition("@")
    root = clone(base.v24, tmp_path / "r")
    proc = cli("revert", cwd=root, env={"RELEASE_FAULT": f"{boundary}:{step}:revert"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert_killed_at(root, REVERT, boundary, node, where, base.s24, base.s23)
    first_ok = {(n, h) for n, h, _r, s in v24_steps(root, REVERT, "kind='service'") if s == "ok"}
    proc = cli("revert", cwd=root)
    assert proc.returncode == 0, proc.stderr
    check_revert_again(root, base, first_ok)


@pytest.mark.slow
@pytest.mark.e2e
def test_sigkill_in_apply_then_in_its_revert(base: Base, tmp_path: Path) -> None:
    """Two crashes in a row: the apply after orders@app2's deploy ran, the revert after the
    schema downgrade ran; each time the journal cannot know that the command did its work."""
    root = clone(base.v23, tmp_path / "r")
    proc = cli("apply", "v2.4", cwd=root, env={"RELEASE_FAULT": "after-command:orders@app2"})
    assert proc.returncode == -signal.SIGKILL
    touched = {(n, h) for n, h, _r, _s in v24_steps(root, APPLY, "kind='service'")}
    proc = cli("revert", cwd=root, env={"RELEASE_FAULT": "after-command:orders-db@o4_notes:revert"})
    assert proc.returncode == -signal.SIGKILL
    assert revision(root / ".release" / "orders.db") == "o3_status"
    first_ok = {(n, h) for n, h, _r, s in v24_steps(root, REVERT, "kind='service'") if s == "ok"}
    assert ("orders", "app2") in first_ok
    proc = cli("revert", cwd=root)
    assert proc.returncode == 0, proc.stderr
    check_revert_again(root, base, first_ok, touched)
    before = {h: events(root, h) for h in HOSTS}
    proc = cli("revert", cwd=root, check=0)
    assert "already reverted" in proc.stdout
    assert {h: events(root, h) for h in HOSTS} == before
    assert_reverted(root, base)


@pytest.mark.slow
@pytest.mark.e2e
def test_half_reverted_release_must_be_finished_first(base: Base, tmp_path: Path) -> None:
    """Another apply over a revert killed halfway would leave v2.4 half undone for good: the
    next revert would undo that apply, and v2.4 would no longer be the latest release."""
    root = clone(base.v24, tmp_path / "r")
    proc = cli("revert", cwd=root, env={"RELEASE_FAULT": "after-outcome:orders@app1:revert"})
    assert proc.returncode == -signal.SIGKILL
    crashed = snapshot(root)
    for name in ("v2.5", "v2.4"):  # one after the other: at once, one may meet the other's lock
        proc = cli("apply", name, cwd=root)
        assert proc.returncode == 2, proc.stderr
        assert "v2.4 is partly reverted" in proc.stderr and "release revert" in proc.stderr
    assert snapshot(root) == crashed
    assert journal_rows(root, "select name from releases order by id") == [("v2.3",), ("v2.4",)]
    st = status(root)
    assert (st["state"], st["revert_state"]) == ("applied", "interrupted")  # status says it is half back
    assert "(revert interrupted: run `release revert` to finish it)" in cli("status", cwd=root).stdout
    proc = cli("revert", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert_reverted(root, base)


@pytest.mark.parametrize("fault,touched", [
    ("after-outcome:orders@app1:revert", ("orders", "app1")),  # reverted, and journaled so
    ("after-command:payments@app2:revert", ("payments", "app2")),  # reverted, but in doubt
])
@pytest.mark.slow
@pytest.mark.e2e
def test_force_release_resumes_over_a_half_revert_and_revert_undoes_it_all(
        base: Base, tmp_path: Path, fault: str, touched: tuple[str, str]) -> None:
    """`apply v2.4 --force-release` over its own half-finished revert deploys the reverted hosts
    again; the next revert must undo those too, though each of them was reverted once before."""
    root = clone(base.v24, tmp_path / "r")
    proc = cli("revert", cwd=root, env={"RELEASE_FAULT": fault})
    assert proc.returncode == -signal.SIGKILL
    assert current(root, touched[1], touched[0]) == "v2.3"
    reverted_once = {(n, h) for n, h, _r, _s in v24_steps(root, REVERT, "kind='service'")}
    assert touched in reverted_once
    step = next(s for s in cli_json("plan", "v2.4", cwd=root)["steps"] if s["node"] == touched[0])
    assert step["action"] == "deploy"
    # The host's probe says what the revert left there, even where the journal cannot know.
    assert step["current"][touched[1]] == "v2.3"
    if fault.startswith("after-command"):  # the journal still says v2.4 there
        assert f"drift: journal says v2.4, {touched[1]} reports v2.3" in [w["message"] for w in step["warnings"]]
    proc = cli("apply", "v2.4", "--force-release", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert_applied(root, base)
    redeployed = {(n, h) for n, h, _r, s in v24_steps(
        root, APPLY, "kind='service' and id > (select max(id) from steps where phase='revert')")}
    assert redeployed == reverted_once
    assert journal_rows(root, "select state, revert_state from releases where name='v2.4'") == [("applied", None)]
    assert journal_rows(root, "select event from events where event='resume_over_revert'") == [("resume_over_revert",)]
    marks = {h: len(events(root, h)) for h in HOSTS}
    proc = cli("revert", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert_reverted(root, base)
    for n, h in reverted_once:  # reverted (again) after the resumed apply put them forward
        assert any(e[1:4] == ("start", "revert", n) for e in events(root, h)[marks[h]:]), (n, h)


@pytest.mark.slow
@pytest.mark.e2e
def test_force_release_over_a_revert_that_changed_nothing(base: Base, tmp_path: Path) -> None:
    """The revert died before its first step (as if killed right after its preflight):
    continuing v2.4 has nothing to do, and v2.4 must then count as applied, not as partly
    reverted (which would refuse every later apply)."""
    root = clone(base.v24, tmp_path / "r")
    con = sqlite3.connect(root / ".release" / "journal.db")
    with con:  # a fault hook only fires at a step, and the first revert wave has two of them
        con.execute("update releases set revert_state='in_progress' where name='v2.4'")
    con.close()
    assert status(root)["revert_state"] == "interrupted"  # its process is gone
    assert cli("apply", "v2.4", cwd=root).returncode == 2
    proc = cli("apply", "v2.4", "--force-release", cwd=root)
    assert proc.returncode == 0 and "nothing to change" in proc.stdout, proc.stderr
    assert journal_rows(root, "select state, revert_state from releases where name='v2.4'") == [("applied", None)]
    assert snapshot(root) == base.s24
    proc = cli("revert", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert_reverted(root, base)


# -- SIGKILL of the whole process group at random instants -------------------------------------

SLOW = {"catalog": 0.2, "accounts": 0.3, "inventory": 0.25, "orders": 0.3, "payments": 0.4,
        "notifications": 0.2, "web": 0.5}
MIGRATION_PAUSE = 0.6
APPLY_SPAN = 2.6  # seconds from the release record to the end of the slow apply, about


def whole_revisions(root: Path, base: Base) -> None:
    """Each database sits at a whole revision: v2.3's schema, or v2.4's with both new tables."""
    assert (revision(root / ".release" / "accounts.db"), schema(root / ".release" / "accounts.db")) == base.s23["accounts-db"]
    rev, tabs = revision(root / ".release" / "orders.db"), schema(root / ".release" / "orders.db")
    old = base.s23["orders-db"][1]
    new = {**old, "order_notes": ["id", "text"], "order_tags": ["id"]}
    assert (rev, tabs) in (("o3_status", old), ("o4_notes", new)), (rev, sorted(tabs))


def killpg_at_random_instant_then_revert(base: Base, root: Path, seed: int) -> None:
    slow_deploys(root, SLOW)
    add_notes_revision(root, pause=MIGRATION_PAUSE, two_tables=True)
    delay = random.Random(seed).uniform(0.0, APPLY_SPAN)
    proc, err = start(root, "apply", "v2.4")
    try:
        # From the release record on: a kill before it would leave v2.3 as the latest release.
        wait_for(lambda: list((root / ".release" / "logs").glob("v2.4-*.jsonl")), what="the v2.4 run")
        time.sleep(delay)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it finished first: revert must then undo a whole release
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode in (-signal.SIGKILL, 0), err.read_text()
    whole_revisions(root, base)
    assert status(root)["state"] in ("interrupted", "applied")
    proc2 = cli("revert", cwd=root)
    assert proc2.returncode == 0, f"seed {seed}, killed {delay:.2f}s in: {proc2.stderr}"
    assert_reverted(root, base)


# Two runs at a time: they mostly sleep, and ten in a row would take a minute.
@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("seeds", [(s, s + 1) for s in range(0, 10, 2)], ids=lambda s: f"seeds{s[0]}-{s[1]}")
def test_killpg_at_random_instant_then_revert(base: Base, tmp_path: Path, seeds: tuple[int, int]) -> None:
    both(*(lambda s=s: killpg_at_random_instant_then_revert(base, clone(base.v23, tmp_path / f"r{s}"), s)
           for s in seeds))


# -- Ctrl-C ------------------------------------------------------------------------------------


def ctrl_c_setup(base: Base, tmp_path: Path, pause: float) -> tuple[Path, subprocess.Popen, Path]:
    root = clone(base.v23, tmp_path / "r")
    slow_deploys(root, {s: pause for s in SERVICES})
    proc, err = start(root, "apply", "v2.4")
    wait_for(lambda: running(root), what="a deploy to start")
    return root, proc, err


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_lets_running_commands_finish(base: Base, tmp_path: Path, how: str) -> None:
    root, proc, err = ctrl_c_setup(base, tmp_path, 0.8)
    was_running = running(root)
    interrupted_at = time.time()
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground group
    else:
        proc.terminate()  # what `kill` or a CI runner's cancel does: the tool's process
    assert proc.wait(timeout=60) == 130, err.read_text()
    assert "interrupted" in err.read_text() and "release revert" in err.read_text()
    ends = []
    for h in HOSTS:
        evs = [e for e in events(root, h) if e[4] == "v2.4"]
        for _ts, _what, action, svc, version in evs:
            key = ("start", action, svc, version)
            # Every command that started ran to its end: start and end lines pair up.
            assert sum(e[1:] == key for e in evs) == sum(e[1:] == ("end", *key[1:]) for e in evs), (h, svc)
        ends += [ts for ts, what, _a, svc, _v in evs if what == "end" and (h, svc) in was_running]
    assert ends and min(ends) > interrupted_at  # those running at the interrupt ended after it
    # Nothing was launched after the interrupt, in the order the tool itself logged things.
    (log,) = (root / ".release" / "logs").glob("v2.4-*.jsonl")
    order = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert "interrupt" in order and "deploy.start" not in order[order.index("interrupt"):]
    assert status(root)["state"] == "interrupted"
    assert v24_steps(root, APPLY, "status='intent'") == []  # nothing in doubt
    assert not leftover_commands(root)
    proc = cli("revert", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert_reverted(root, base)


@pytest.mark.slow
@pytest.mark.e2e
def test_second_ctrl_c_kills_running_commands(base: Base, tmp_path: Path) -> None:
    root, proc, err = ctrl_c_setup(base, tmp_path, 30)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # the first interrupt waits for the running commands
    was_running = running(root)  # no new launches since the first interrupt
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=20) == 130, err.read_text()
    assert time.monotonic() - t0 < 15  # nowhere near the commands' 30 s
    assert running(root) == was_running  # killed: they never wrote their end line
    assert not leftover_commands(root)
    assert status(root)["state"] == "interrupted"
    steps = v24_steps(root, APPLY)
    # Consistent: every step has its outcome, the killed ones failed; one whose intent was being
    # written at the first Ctrl-C never started (skipped).
    assert steps and all(s in ("ok", "failed", "skipped") for *_x, s in steps)
    assert {(n, h) for n, h, _r, s in steps if s == "failed"} == {(s, h) for h, s in was_running}
    proc = cli("revert", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert_reverted(root, base)


# -- journal files that are not journals ---------------------------------------------------------


def foreign_sqlite(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("create table customers (id integer primary key, name text)")
    con.execute("insert into customers (name) values ('ada')")
    con.commit()
    con.close()


def future_journal(path: Path) -> None:
    """A real journal whose schema revision this tool has never heard of."""
    j = Journal.open(f"sqlite:///{path}", create=True)
    assert j is not None
    j.close()
    con = sqlite3.connect(path)
    con.execute("update alembic_version set version_num = 'j9999_from_the_future'")
    con.commit()
    con.close()


@pytest.mark.parametrize("kind,message", [
    ("random", "is not a journal"),
    ("foreign", "is not a journal (tables: customers)"),
    ("future", "j9999_from_the_future is newer than this release tool knows"),
])
def test_journal_that_is_not_a_journal(tmp_path: Path, kind: str, message: str) -> None:
    root = copy_demo(tmp_path / "r")
    journal = root / ".release" / "journal.db"
    journal.parent.mkdir()
    if kind == "random":
        journal.write_bytes(random.Random(5).randbytes(8192))
    elif kind == "foreign":
        foreign_sqlite(journal)
    else:
        future_journal(journal)
    before = journal.read_bytes()
    runs = [("apply", "v2.3"), ("status",)] + ([("revert",), ("plan", "v2.3")] if kind == "random" else [])
    for args in runs:
        proc = run(*args, cwd=root)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and str(journal) in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    # Nothing ran, nothing was created, and the file is as it was.
    assert sorted(p.name for p in (root / ".release").iterdir()) == ["journal.db"]
    assert journal.read_bytes() == before


@pytest.mark.slow
@pytest.mark.e2e
def test_ctrl_c_during_revert_then_revert_again(tmp_path: Path) -> None:
    """A revert interrupted by Ctrl-C finishes the reverts it started, is `interrupted` (130), and
    a second `release revert` completes it without reverting any host twice."""
    root = copy_demo(tmp_path / "repo")
    cli("apply", "v2.3", cwd=root, check=0)
    cli("apply", "v2.4", cwd=root, check=0)
    path = root / "services.d" / "web.yaml"
    lines = path.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if " start $RELEASE_ACTION" in line)
    lines.insert(at + 1, '  [ "$RELEASE_ACTION" != revert ] || sleep 2\n')
    path.write_text("".join(lines))
    # The revert works from the journaled manifests: apply the slow revert as part of v2.4.
    cli("revert", cwd=root, check=0)
    cli("apply", "v2.4", cwd=root, check=0)
    proc, err = start(root, "revert")
    wait_for(lambda: starts(root, "edge1", "revert", "web", "v2.3") == 2, what="the slow web revert")
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(30) == 130, err.read_text()
    ends = [e for e in events(root, "edge1") if e[1] == "end" and e[2] == "revert" and e[3] == "web"]
    assert len(ends) == 2  # the web revert that had started ran to its end
    assert current(root, "edge1", "web") == "v2.3" and current(root, "app1", "orders") == "v2.4"
    hist = journal_rows(root, "select revert_state from releases order by id desc limit 1")
    assert hist == [("interrupted",)]
    cli("revert", cwd=root, check=0)
    assert current(root, "app1", "orders") == "v2.3"
    assert starts(root, "edge1", "revert", "web") == 2  # not reverted a third time
