"""The release lock (issue 5): one apply or revert per journal, exit 3 naming the holder, dead
holders taken over, foreign stale holders reported, `release unlock` only with the right id.

The CLI runs as a separate process on a copy of the embedded demo (local hosts, SQLite): a lock
names its holder's PID, so the holder and the one refused must be processes of their own.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from orchestrator.transports import Command
from helpers import (SERVICES, background, cli, cli_json, clone, copy_demo, current, events, finish, journal_rows,
                     slow_deploys, spawn, wait_for)

pytestmark = pytest.mark.e2e


def execute(root: Path, sql: str, *args: Any) -> None:
    con = sqlite3.connect(root / ".release" / "journal.db", timeout=30)
    try:
        con.execute(sql, args)
        con.commit()
    finally:
        con.close()


def plant_lock(root: Path, *, lock_id: str, hostname: str, pid: int, proc_start: float | None,
               heartbeat: float, command: str = "apply v2.4", pid_ns: int | None = None,
               run_id: str | None = None) -> None:
    """A lock row as another apply would have written it; `pid_ns` defaults to ours."""
    values = {"id": 1, "lock_id": lock_id, "owner": "deploy", "hostname": hostname, "pid": pid,
              "proc_start": proc_start, "command": command, "since": heartbeat, "heartbeat": heartbeat,
              "pid_ns": os.stat("/proc/self/ns/pid").st_ino if pid_ns is None else pid_ns, "run_id": run_id}
    known = {r[1] for r in journal_rows(root, "pragma table_info(lock)")}
    cols = [c for c in values if c in known]
    execute(root, f"insert into lock ({', '.join(cols)}) values ({', '.join('?' for _ in cols)})",
            *(values[c] for c in cols))


def lock_ids(root: Path) -> list[str]:
    return [r[0] for r in journal_rows(root, "select lock_id from lock")]


def journal_events(root: Path) -> list[tuple[str, str]]:
    return journal_rows(root, "select event, detail from events order by id")


def all_at(root: Path, version: str | None) -> bool:
    return all(current(root, h, s) == version for s, hosts in SERVICES.items() for h in hosts)


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo with v2.3 applied: a journal exists."""
    root = copy_demo(tmp_path_factory.mktemp("lock-base") / "v23")
    cli("apply", "v2.3", cwd=root, check=0)  # a process of its own: the record names its PID
    return root


@pytest.mark.parametrize("first_release", [True, False], ids=["fresh-journal", "existing-journal"])
@pytest.mark.slow
def test_two_applies_started_together(applied: Path, tmp_path: Path, first_release: bool) -> None:
    # On a fresh copy both processes also race to create the journal itself.
    root = copy_demo(tmp_path / "r") if first_release else clone(applied, tmp_path / "r")
    name = "v2.3" if first_release else "v2.4"
    slow_deploys(root, {s: 0.3 for s in SERVICES})
    procs = [spawn(root, "apply", name), spawn(root, "apply", name)]
    out = [(p, *p.communicate(timeout=120)) for p in procs]
    assert sorted(p.returncode for p, *_ in out) == [0, 3], [(p.returncode, err) for p, _o, err in out]
    (winner, *_), (loser, _lo, lerr) = sorted(out, key=lambda o: o[0].returncode)
    # The loser names the holder: who, which process, doing what, since when, and the lock id.
    m = re.search(r"the release lock (\w+) is held by \S+@(\S+) pid (\d+) \(apply (\S+)\) since \d{4}-", lerr)
    assert m, lerr
    assert (m.group(2), int(m.group(3)), m.group(4)) == (socket.gethostname(), winner.pid, name)
    assert "Traceback" not in lerr
    # Exactly one ran: one release record, each command once, the lock gone afterwards.
    assert journal_rows(root, "select name, state from releases where name=?", name) == [(name, "applied")]
    for s, hosts in SERVICES.items():
        for h in hosts:
            assert sum(1 for e in events(root, h) if e[1:] == ("start", "deploy", s, name)) == 1, (s, h)
    assert all_at(root, name)
    assert lock_ids(root) == []


@pytest.mark.slow
def test_lock_of_a_killed_process_is_taken_over(applied: Path, tmp_path: Path) -> None:
    root = clone(applied, tmp_path / "r")
    proc = cli("apply", "v2.4", cwd=root, env={"RELEASE_FAULT": "after-command:orders@app1"})
    assert proc.returncode == -9
    [(lock_id, pid, command)] = journal_rows(root, "select lock_id, pid, command from lock")
    assert command == "apply v2.4" and not psutil.pid_exists(pid)
    # A wrong id removes nothing, even from a dead holder.
    proc = cli("unlock", "0123456789ab", cwd=root)
    assert proc.returncode == 2 and "does not match" in proc.stderr and "nothing removed" in proc.stderr
    assert lock_ids(root) == [lock_id]
    # No manual step: the revert takes the lock over, says so, and journals it.
    proc = cli("revert", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert "lock.takeover" in proc.stderr and lock_id in proc.stderr
    [(event, detail)] = journal_events(root)
    assert event == "lock_takeover" and lock_id in detail and f"pid {pid}" in detail
    assert all_at(root, "v2.3") and lock_ids(root) == []


@pytest.mark.slow
def test_reused_pid_is_not_the_holder(applied: Path, tmp_path: Path) -> None:
    """The recorded PID is alive but belongs to a process started at another time: PIDs are
    reused, so the start time decides and the lock is taken over."""
    root = clone(applied, tmp_path / "r")
    plant_lock(root, lock_id="a1b2c3d4e5f6", hostname=socket.gethostname(), pid=os.getpid(),
               proc_start=psutil.Process().create_time() - 3600, heartbeat=time.time())
    proc = cli("apply", "v2.4", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert [e for e, _d in journal_events(root)] == ["lock_takeover"]
    assert all_at(root, "v2.4")


@pytest.mark.slow
def test_takeover_kills_the_dead_holders_commands(applied: Path, tmp_path: Path) -> None:
    """The holder is gone but one of its commands still runs (here this test process stands in
    for whatever kept it alive: its runner is alive, so it is not killed with the holder): the
    takeover kills it before the new run starts, and says so."""
    from orchestrator.transports import local

    root = clone(applied, tmp_path / "r")
    host = root / ".release" / "hosts" / "app1"
    dead = subprocess.Popen(["true"])
    dead.wait()
    result: list[Any] = []
    runner = threading.Thread(target=lambda: result.append(asyncio.run(local.LocalTransport("app1", host, root).run(
        Command("sleep 5; touch late", timeout=60)))))
    runner.start()
    try:
        wait_for(lambda: any(p.info["name"] == "sleep" and p.info["cwd"] == str(host)
                             for p in psutil.process_iter(["name", "cwd"])), what="the command")
        plant_lock(root, lock_id="0ff1ce0ff1ce", hostname=socket.gethostname(), pid=dead.pid,
                   proc_start=time.time() - 60, heartbeat=time.time(), run_id=getattr(local, "RUN_ID", None))
        proc = cli("apply", "v2.4", cwd=root)
        assert proc.returncode == 0, proc.stderr
        [(event, detail)] = journal_events(root)
        assert event == "lock_takeover" and "0ff1ce0ff1ce" in detail
        assert "killed 1 of its commands still running" in detail, detail
    finally:
        runner.join(30)
    assert result and not result[0].ok
    # Killed, not finished: nothing of it is left in the host's directory to `touch late` later.
    wait_for(lambda: not any(p.info["cwd"] == str(host) for p in psutil.process_iter(["cwd"])),
             what="the dead holder's command to be gone")
    assert not (host / "late").exists()
    assert all_at(root, "v2.4")


@pytest.mark.slow
def test_live_holder_and_lock_wait(applied: Path, tmp_path: Path) -> None:
    root = clone(applied, tmp_path / "r")
    me = psutil.Process()
    plant_lock(root, lock_id="feedc0ffee00", hostname=socket.gethostname(), pid=me.pid,
               proc_start=me.create_time(), heartbeat=time.time(), command="revert")
    t0 = time.monotonic()
    proc = cli("apply", "v2.4", "--lock-wait", "1", cwd=root)
    assert proc.returncode == 3 and time.monotonic() - t0 >= 1
    assert f"feedc0ffee00 is held by deploy@{socket.gethostname()} pid {me.pid} (revert)" in proc.stderr
    assert "stale" not in proc.stderr  # a live holder is never called stale
    assert not all_at(root, "v2.4") and journal_events(root) == []
    # Nor removed by `release unlock`: a second apply would then run beside the holder.
    proc = cli("unlock", "feedc0ffee00", cwd=root)
    assert proc.returncode == 3 and "running on this machine" in proc.stderr and "nothing removed" in proc.stderr
    assert lock_ids(root) == ["feedc0ffee00"] and journal_events(root) == []
    # The holder lets go while the next apply waits: that one then runs.
    threading.Timer(1.5, lambda: execute(root, "delete from lock")).start()
    proc = cli("apply", "v2.4", "--lock-wait", "30", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert all_at(root, "v2.4") and journal_events(root) == []


@pytest.mark.slow
def test_foreign_host_lock_stale_and_unlock(applied: Path, tmp_path: Path) -> None:
    """A holder on another machine cannot be checked: a recent heartbeat means held, an old one
    is reported as stale, and only `release unlock` with its id removes it."""
    root = clone(applied, tmp_path / "r")
    plant_lock(root, lock_id="0ddba11cafe0", hostname="build-7.example", pid=4242, proc_start=1.0,
               heartbeat=time.time())
    proc = cli("apply", "v2.4", cwd=root)
    assert proc.returncode == 3 and "0ddba11cafe0 is held by deploy@build-7.example pid 4242" in proc.stderr
    assert "stale" not in proc.stderr
    proc = cli("unlock", "0ddba11cafe0", cwd=root)  # a fresh heartbeat: not stale yet
    assert proc.returncode == 3 and "heartbeat is" in proc.stderr and lock_ids(root) == ["0ddba11cafe0"]
    execute(root, "update lock set heartbeat = ?", time.time() - 3600)
    proc = cli("revert", cwd=root)
    assert proc.returncode == 3
    assert "looks stale" in proc.stderr and "release unlock 0ddba11cafe0" in proc.stderr
    proc = cli("unlock", "WRONGID", cwd=root)
    assert proc.returncode == 2 and "WRONGID" in proc.stderr
    assert lock_ids(root) == ["0ddba11cafe0"]
    proc = cli("unlock", "0ddba11cafe0", cwd=root, check=0)
    assert lock_ids(root) == []
    [(event, detail)] = journal_events(root)
    assert event == "unlock" and "0ddba11cafe0" in detail and "build-7.example" in detail
    proc = cli("unlock", "0ddba11cafe0", cwd=root)
    assert proc.returncode == 2 and "no release lock" in proc.stderr
    cli("apply", "v2.4", cwd=root, check=0)
    assert all_at(root, "v2.4")


@pytest.mark.slow
def test_run_whose_lock_was_removed_starts_nothing_more(applied: Path, tmp_path: Path) -> None:
    """A lock removed under a running apply (by hand, or `release unlock` of a lock wrongly
    thought stale): at its next heartbeat the apply starts no new step, lets running ones finish,
    and ends `interrupted` (130), from where revert works."""
    root = clone(applied, tmp_path / "r")
    slow_deploys(root, {s: 4 for s in SERVICES})
    with background(spawn(root, "apply", "v2.4")) as proc:
        wait_for(lambda: proc.poll() is not None or lock_ids(root) and any(
            e[1] == "start" for h in ("app1", "app2") for e in events(root, h)), what="the apply to start")
        assert proc.poll() is None, "the apply ended before it started a deploy"
        execute(root, "delete from lock")
        _out, err = finish(proc, timeout=60, check=130)
    assert "lock.lost" in err
    assert journal_rows(root, "select state from releases where name='v2.4'") == [("interrupted",)]
    assert current(root, "edge1", "web") == "v2.3"  # the last wave never started
    proc = cli("revert", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert all_at(root, "v2.3")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and util-linux unshare")
def test_holder_in_another_pid_namespace_is_not_taken_over(applied: Path, tmp_path: Path) -> None:
    """Containers with host networking share the host name, not the PID namespace: a holder in
    another namespace cannot be checked by PID (its PID here is some other process, or none), so
    it counts as a foreign holder and is never taken over while its heartbeat is fresh."""
    root = clone(applied, tmp_path / "r")
    slow_deploys(root, {s: 1.5 for s in SERVICES})
    with background(spawn(root, "apply", "v2.4", prefix=("unshare", "--pid", "--fork", "--mount-proc"))) as holder:
        wait_for(lambda: lock_ids(root) and any(e[1] == "start" for e in events(root, "app1")),
                 what="the holder to take the lock and start deploying")
        [(held, pid)] = journal_rows(root, "select lock_id, pid from lock")
        assert pid != holder.pid  # its PID in its own namespace
        proc = cli("apply", "v2.4", cwd=root)
        assert proc.returncode == 3, proc.stderr
        assert f"the release lock {held} is held by" in proc.stderr and "takeover" not in proc.stderr
        assert cli_json("status", cwd=root)["state"] == "in_progress"  # not `interrupted`
        proc = cli("unlock", held, cwd=root)
        assert proc.returncode == 3 and "nothing removed" in proc.stderr
        finish(holder)
    assert journal_events(root) == []  # no takeover, no unlock
    assert all_at(root, "v2.4") and lock_ids(root) == []
    assert journal_rows(root, "select name, state from releases order by id") == [
        ("v2.3", "applied"), ("v2.4", "applied")]
