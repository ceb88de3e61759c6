"""Crash-proof releases over SSH (issue 5 on the SSH fleet): SIGKILL at journal boundaries of steps
on SSH hosts, SIGKILL of the whole process group while remote deploys run, and Ctrl-C.

The embedded demo points at the `fleet` of real sshd hosts (only services.d/hosts.yaml differs);
each host's files are checked in its own home. The cases start from shared baselines (v2.3 applied
plus a new orders revision, so that v2.4 migrates a database too; and v2.4 applied on top): the
project directory is cloned with its .release state and every host's home is put back as it was
in the baseline, which saves one or two applies per case.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import (Baselines, add_notes_revision, clone, copy_demo, journal_rows, revision, schema, slow_deploys,
                     v24_steps, wait_for)
from orchestrator import commands
from orchestrator.lifecycle import Phase

APPLY, REVERT = Phase.APPLY, Phase.REVERT
from test_release_ssh import Demo, run_on

pytestmark = [pytest.mark.ssh, pytest.mark.e2e]

DATABASES = {"accounts-db": "accounts.db", "orders-db": "orders.db"}


# -- the state on the hosts and in the databases -----------------------------------------------


def snapshot(demo: Demo) -> dict[str, Any]:
    """What is really in place: every host's `current` link (read in its home, link and VERSION
    file checked to agree), which services have a directory there, each database's revision and
    tables."""
    out: dict[str, Any] = {f"{s}@{h}": demo.current(h, s) for s, hosts in demo.services.items() for h in hosts}
    for h in demo.hosts:
        apps = demo.home(h) / "apps"
        out[f"apps@{h}"] = sorted(p.name for p in apps.iterdir()) if apps.exists() else []
    for db, file in DATABASES.items():
        out[db] = revision(demo.root / ".release" / file)
        out[f"{db} schema"] = schema(demo.root / ".release" / file)
    return out






def starts(demo: Demo, host: str, action: str, service: str, since: dict[str, int], version: str | None = None) -> int:
    return sum(1 for _ts, what, a, s, v in demo.events(host)[since[host]:]
               if what == "start" and a == action and s == service and version in (None, v))


def marks(demo: Demo) -> dict[str, int]:
    return {h: len(demo.events(h)) for h in demo.hosts}






def remote_processes(demo: Demo, pattern: str) -> dict[str, str]:
    """Processes matching `pattern` seen from each host, asked there through a fresh connection."""
    async def ask() -> list:
        return await asyncio.gather(*(run_on(demo.fleet, demo.fleet_name[h],
                                              f"out=$(pgrep -af '{pattern}') || exit 1; "
                                              "printf '%s\\n' \"$out\" | cut -c1-100")
                                      for h in demo.hosts))
    out = {}
    for h, result in zip(demo.hosts, asyncio.run(ask())):
        assert result.exit_code in (0, 1), (h, result)
        if result.exit_code == 0:
            out[h] = result.stdout
    return out


# -- baselines ---------------------------------------------------------------------------------


@dataclass
class State:
    """A project directory with its .release state and a copy of every fleet host's home."""

    root: Path
    homes: Path


def save(demo: Demo, where: Path) -> State:
    homes = where / "homes"
    homes.mkdir(parents=True)
    for h in demo.fleet.hosts:
        (homes / h.name).mkdir()
        # -a: links stay links, and the files stay the deploy user's
        subprocess.run(["cp", "-a", f"{h.home}/.", str(homes / h.name)], check=True)
    return State(clone(demo.root, where / "repo"), homes)


def restore(state: State, fleet, dest: Path) -> Demo:
    fleet.heal_all()
    fleet.clear_homes()
    for h in fleet.hosts:
        subprocess.run(["cp", "-a", f"{state.homes / h.name}/.", str(h.home)], check=True)
    return Demo(clone(state.root, dest), fleet)


Base = Baselines[State]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, fleet) -> Base:
    if len(fleet.names) < 6:
        pytest.skip("these tests name app1..app4, edge1 and edge2: they need a fleet of 6 hosts")
    tmp = tmp_path_factory.mktemp("crash-ssh-base")
    fleet.heal_all()
    fleet.clear_homes()
    demo = Demo(copy_demo(tmp / "work"), fleet)
    demo.write_inventory()
    demo.cli("apply", "v2.3", check=0)
    add_notes_revision(demo.root)
    s23 = snapshot(demo)
    v23 = save(demo, tmp / "v23")
    demo.cli("apply", "v2.4", check=0)
    s24 = snapshot(demo)
    v24 = save(demo, tmp / "v24")
    assert s23["orders-db"] == "o3_status" and s24["orders-db"] == "o4_notes"
    assert "order_notes" in s24["orders-db schema"] and "order_notes" not in s23["orders-db schema"]
    for s, hosts in demo.services.items():
        assert all(s23[f"{s}@{h}"] == "v2.3" and s24[f"{s}@{h}"] == "v2.4" for h in hosts)
    return Base(v23, v24, s23, s24)


def assert_reverted(demo: Demo, base: Base) -> None:
    assert snapshot(demo) == base.s23
    st = commands.status(demo.root)
    assert (st["release"], st["state"]) == ("v2.4", "reverted")
    assert st["services"] == {s: {h: "v2.3" for h in hosts} for s, hosts in demo.services.items()}
    assert st["databases"] == {"accounts-db": "a3_sessions", "orders-db": "o3_status"}
    assert journal_rows(demo.root, "select state, revert_state from releases where name='v2.4'") == [
        ("reverted", "done")]


def assert_applied(demo: Demo, base: Base) -> None:
    assert snapshot(demo) == base.s24
    st = commands.status(demo.root)
    assert (st["release"], st["state"]) == ("v2.4", "applied")
    assert st["services"] == {s: {h: "v2.4" for h in hosts} for s, hosts in demo.services.items()}
    assert journal_rows(demo.root, "select count(*) from releases where name='v2.4'") == [(1,)]


def assert_killed_at(demo: Demo, phase: str, boundary: str, node: str, host: str, before: str, after: str) -> None:
    """The fault fired exactly where asked: the journal and the host's home agree on it."""
    statuses = [r[3] for r in v24_steps(demo.root, phase, f"node='{node}' and host='{host}'")]
    assert statuses == {"after-intent": ["intent"], "after-command": ["intent"],
                        "after-outcome": ["ok"]}[boundary]
    # after-intent: the command never ran; after-command: it ran, but the journal cannot know.
    assert demo.current(host, node) == (before if boundary == "after-intent" else after)


# -- SIGKILL at journal boundaries of steps on SSH hosts ---------------------------------------

# orders@app2: the middle of the graph, the second host of a rolling update; web@edge2: the
# last wave; catalog@app1: the first.
APPLY_POINTS = [
    ("after-intent", "orders@app2", True),
    ("after-command", "orders@app2", True),
    ("after-intent", "web@edge2", False),
    ("after-command", "catalog@app1", False),
]


@pytest.mark.parametrize("boundary,step,resume", APPLY_POINTS, ids=[f"{b}:{s}" for b, s, _ in APPLY_POINTS])
def test_sigkill_during_ssh_apply_then_revert(base: Base, fleet, tmp_path: Path, boundary: str, step: str,
                                              resume: bool) -> None:
    node, _, host = step.partition("@")
    demo = restore(base.v23, fleet, tmp_path / "crashed")
    proc = demo.cli("apply", "v2.4", env={"RELEASE_FAULT": f"{boundary}:{step}"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert_killed_at(demo, APPLY, boundary, node, host, "v2.3", "v2.4")
    assert commands.status(demo.root)["state"] == "interrupted"
    touched = {(n, h) for n, h, _r, _s in v24_steps(demo.root, APPLY, "kind='service'")}
    done = {(n, h) for n, h, _r, s in v24_steps(demo.root, APPLY, "kind='service'") if s == "ok"}
    crashed = save(demo, tmp_path / "crash-state") if resume else None

    mark = marks(demo)
    proc = demo.cli("revert")
    assert proc.returncode == 0, proc.stderr
    assert_reverted(demo, base)
    # Exactly what may have happened is undone, the in-doubt host included; a host the release
    # never reached runs no revert.
    for s, hosts in demo.services.items():
        for h in hosts:
            assert starts(demo, h, "revert", s, mark) == (1 if (s, h) in touched else 0), (s, h)
    assert [e for e, in journal_rows(demo.root, "select event from events")] == ["lock_takeover"]

    if crashed is None:
        return
    # The same crash, continued instead of reverted: done steps are skipped, and so is an
    # in-doubt one whose host's probe already reports v2.4; the others run again.
    demo = restore(crashed, fleet, tmp_path / "resumed")
    there = {(s, h) for s, hosts in demo.services.items() for h in hosts if demo.current(h, s) == "v2.4"}
    assert done <= there and (boundary != "after-command" or (node, host) in there)
    mark = marks(demo)
    proc = demo.cli("apply", "v2.4")
    assert proc.returncode == 0, proc.stderr
    assert_applied(demo, base)
    for s, hosts in demo.services.items():
        for h in hosts:
            n = starts(demo, h, "deploy", s, mark, "v2.4")
            assert n == (0 if (s, h) in there else 1), (s, h, n)


# Revert runs dependents first: web among the first, orders in the middle, accounts late.
REVERT_POINTS = [
    ("after-intent", "orders@app3"),
    ("after-command", "web@edge1"),
    ("after-outcome", "accounts@app2"),
]


@pytest.mark.parametrize("boundary,step", REVERT_POINTS, ids=[f"{b}:{s}" for b, s in REVERT_POINTS])
def test_sigkill_during_ssh_revert_then_revert_again(base: Base, fleet, tmp_path: Path, boundary: str,
                                                     step: str) -> None:
    node, _, host = step.partition("@")
    demo = restore(base.v24, fleet, tmp_path / "r")
    mark = marks(demo)
    proc = demo.cli("revert", env={"RELEASE_FAULT": f"{boundary}:{step}:revert"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert_killed_at(demo, REVERT, boundary, node, host, "v2.4", "v2.3")
    first_ok = {(n, h) for n, h, _r, s in v24_steps(demo.root, REVERT, "kind='service'") if s == "ok"}
    proc = demo.cli("revert")
    assert proc.returncode == 0, proc.stderr
    assert_reverted(demo, base)
    for s, hosts in demo.services.items():
        for h in hosts:
            # A host whose revert finished is not reverted again; one in doubt may be, once more.
            n = starts(demo, h, "revert", s, mark)
            assert (n == 1) if (s, h) in first_ok else (1 <= n <= 2), (s, h, n)
    # Never downgraded twice: only o4_notes ever was, and the schema (in the snapshot) is
    # o3_status's whole.
    db = v24_steps(demo.root, REVERT, "node='orders-db'")
    assert db and {r for _n, _h, r, _s in db} == {"o4_notes"}
    assert sum(s == "ok" for *_x, s in db) <= 1


# -- the whole process group killed while remote deploys run ----------------------------------


def start(demo: Demo, *args: str) -> tuple[subprocess.Popen, Path]:
    """The CLI in a session of its own, as a terminal runs it: killpg reaches it, never pytest."""
    err = demo.root.parent / f"{demo.root.name}-stderr.txt"
    env = dict(os.environ, NO_COLOR="1")
    env.pop("RELEASE_FAULT", None)
    with err.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=demo.root, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fh,
                                start_new_session=True)
    return proc, err


def running(demo: Demo) -> list[tuple[str, str]]:
    """(host, service) of the v2.4 deploys that started and have not ended, from the hosts' logs."""
    out = []
    for h in demo.hosts:
        open_: dict[str, int] = {}
        for _ts, what, action, svc, version in demo.events(h):
            if action == "deploy" and version == "v2.4":
                open_[svc] = open_.get(svc, 0) + (1 if what == "start" else -1)
        out += [(h, s) for s, n in open_.items() if n > 0]
    return out


def test_killpg_during_ssh_deploys_then_revert(base: Base, fleet, tmp_path: Path) -> None:
    """SIGKILL of the tool's process group does not reach commands running on SSH hosts: sshd
    keeps a session's processes when its client vanishes. Left alone, a deploy started before the
    crash would finish after the revert and put v2.4 back. The transport ties each remote command
    to its connection instead (a local command dies with the tool's process group, a remote one
    with the tool's connection), so the crash stops them, and the revert's result stays."""
    demo = restore(base.v23, fleet, tmp_path / "r")
    tag = f"{secrets.randbelow(900) + 100}"
    pause = f"3.{tag}"  # long enough to outlast the crash and the revert; unique for pgrep
    # catalog runs on half the backend at once, accounts one host at a time beside it.
    slow_deploys(demo.root, {"catalog": pause, "accounts": pause})
    proc, err = start(demo, "apply", "v2.4")
    try:
        was_running = wait_for(lambda: (r := running(demo)) and len(r) >= 3 and r, what="three deploys")
        os.killpg(proc.pid, signal.SIGKILL)
        crashed_at = time.time()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err.read_text()
    in_doubt = {(h, n) for n, h, _r, _s in v24_steps(demo.root, APPLY, "status='intent' and kind='service'")}
    assert set(was_running) <= in_doubt

    # Right away, as an operator would: the crashed run's deploys would still be sleeping.
    proc = demo.cli("revert")
    assert proc.returncode == 0, proc.stderr
    assert_reverted(demo, base)
    for h, s in in_doubt:  # reverted, whatever their deploy got to do
        assert any(e[1:4] == ("start", "revert", s) and e[0] > crashed_at for e in demo.events(h)), (h, s)
    # The deploys were stopped on the hosts when the tool's connections went away.
    assert not remote_processes(demo, f"[s]leep {pause}")
    # Past the moment the crashed deploys would have ended: nothing changed behind the revert.
    time.sleep(max(0.0, crashed_at + float(pause) + 0.5 - time.time()))
    assert snapshot(demo) == base.s23
    for h, s in was_running:
        assert not any(e[1:5] == ("end", "deploy", s, "v2.4") for e in demo.events(h)), (h, s)
    assert not any(demo.current(h, s) == "v2.4" for s, hosts in demo.services.items() for h in hosts)


# -- Ctrl-C ------------------------------------------------------------------------------------


def test_ctrl_c_during_ssh_apply(base: Base, fleet, tmp_path: Path) -> None:
    demo = restore(base.v23, fleet, tmp_path / "r")
    slow_deploys(demo.root, {s: 0.8 for s in demo.services})
    proc, err = start(demo, "apply", "v2.4")
    try:
        was_running = wait_for(lambda: running(demo), what="a deploy to start")
        interrupted_at = time.time()
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground group
        assert proc.wait(timeout=60) == 130, err.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = err.read_text()
    assert "interrupted" in text and "release revert" in text
    ends = []
    for h in demo.hosts:
        evs = [e for e in demo.events(h) if e[4] == "v2.4"]
        for _ts, _what, action, svc, version in evs:
            key = ("start", action, svc, version)
            # Every command that started ran to its end on its host.
            assert sum(e[1:] == key for e in evs) == sum(e[1:] == ("end", *key[1:]) for e in evs), (h, svc)
        assert all(ts < interrupted_at + 0.5 for ts, what, *_ in evs if what == "start"), h
        ends += [ts for ts, what, _a, svc, _v in evs if what == "end" and (h, svc) in was_running]
    assert ends and min(ends) > interrupted_at  # those running at the interrupt ended after it
    assert commands.status(demo.root)["state"] == "interrupted"
    assert v24_steps(demo.root, APPLY, "status='intent'") == []  # nothing in doubt
    assert not remote_processes(demo, "[s]leep 0.8")
    proc = demo.cli("revert")
    assert proc.returncode == 0, proc.stderr
    assert_reverted(demo, base)
