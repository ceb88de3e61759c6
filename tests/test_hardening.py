"""The tool's own state under hostile conditions: file modes whatever the umask, a state directory
others can write, one that cannot be written, and a full disk (a file-size limit)."""

from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import orchestrator
from helpers import cli, copy_demo, current, journal_rows, run as run_inproc, slow_deploys, wait_for
from orchestrator.writefail import WriteFailed

ROOT_BYPASSES_MODES = os.geteuid() == 0
# As root, file modes bind only without CAP_DAC_OVERRIDE: drop it (and its read twin) for the CLI.
NO_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if ROOT_BYPASSES_MODES else []
needs_mode_checks = pytest.mark.skipif(ROOT_BYPASSES_MODES and shutil.which("setpriv") is None,
                                       reason="root without util-linux setpriv: modes do not bind")
DEMO_HOSTS = {"accounts": ["app1", "app2"], "catalog": ["app1", "app2"], "inventory": ["app1", "app2"],
              "orders": ["app1", "app2"], "payments": ["app2"], "notifications": ["app1"], "web": ["edge1"]}


def release_cmd(*args: str, umask: str | None = None, fsize_kib: int | None = None,
                drop_override: bool = False) -> list[str]:
    """The CLI under a shell that sets a umask and a file-size limit first, as a user would."""
    setup = []
    if umask is not None:
        setup.append(f"umask {umask}")
    if fsize_kib is not None:
        setup.append(f"ulimit -f {fsize_kib}")
    prefix = NO_OVERRIDE if drop_override else []
    return ["bash", "-c", "; ".join([*setup, 'exec "$@"']), "release",
            *prefix, sys.executable, "-m", "orchestrator", *args]


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, NO_COLOR="1")
    full_env.pop("RELEASE_FAULT", None)
    full_env.update(env or {})
    return subprocess.run(release_cmd(*args, **kw), cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def releases(root: Path) -> list[tuple[str, str]]:
    return [(r["release"], r["state"]) for r in json.loads(run_inproc("history", "--json", cwd=root, check=0).stdout)]


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def applied(tmp_path: Path) -> Path:
    """The demo with v2.3 applied."""
    root = copy_demo(tmp_path / "proj")
    cli("apply", "v2.3", "-y", cwd=root, check=0)
    return root


# ---------------------------------------------------------------------------------- file modes

@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("umask", ["000", "002", "022"])
def test_state_files_are_private_whatever_the_umask(tmp_path: Path, umask: str) -> None:
    root = copy_demo(tmp_path / "proj")
    slow_deploys(root, {"web": 2})  # the journal's -wal and -shm exist while the run is under way
    proc = subprocess.Popen(release_cmd("apply", "v2.3", "-y", umask=umask), cwd=root, env=dict(os.environ, NO_COLOR="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    journal = root / ".release" / "journal.db"

    def sidecar_modes() -> dict[str, str] | None:
        try:
            return {s: mode(Path(f"{journal}{s}")) for s in ("-wal", "-shm")}
        except FileNotFoundError:
            return None

    sidecars = wait_for(sidecar_modes, what="the journal's -wal and -shm files")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert sidecars == {"-wal": "0o600", "-shm": "0o600"}
    state = root / ".release"
    assert mode(state) == "0o700"
    assert mode(journal) == "0o600"
    assert mode(state / "logs") == "0o700"
    logs = list((state / "logs").iterdir())
    assert logs and {mode(p) for p in logs} == {"0o600"}
    assert {mode(p) for p in [state / "hosts", *(state / "hosts").iterdir()]} == {"0o700"}


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("target", [".release", ".release/journal.db"])
def test_a_state_dir_or_journal_others_can_write_is_refused(applied: Path, target: str) -> None:
    path = applied / target
    path.chmod(0o775 if path.is_dir() else 0o664)
    for args in (["apply", "v2.4", "-y"], ["status"]):
        proc = cli(*args, cwd=applied)
        assert proc.returncode == 2, proc.stderr
        [line] = errors(proc.stderr)
        assert str(path) in line and "writable by group or others" in line and "chmod" in line, line
    assert all(current(applied, h, s) == "v2.3" for s, hosts in DEMO_HOSTS.items() for h in hosts)
    path.chmod(0o700 if path.is_dir() else 0o600)
    assert releases(applied) == [("v2.3", "applied")]


# -------------------------------------------------------- failures before the release record

@pytest.mark.e2e
@pytest.mark.slow
@needs_mode_checks
def test_an_unwritable_log_dir_refuses_the_apply_and_leaves_no_record(applied: Path) -> None:
    logs = applied / ".release" / "logs"
    logs.chmod(0o500)
    try:
        proc = run("apply", "v2.4", "-y", cwd=applied, drop_override=True)
    finally:
        logs.chmod(0o700)
    assert proc.returncode == 2, proc.stderr
    [line] = errors(proc.stderr)
    assert "cannot write the log" in line and str(logs) in line, line
    assert releases(applied) == [("v2.3", "applied")]
    assert current(applied, "edge1", "web") == "v2.3"
    # Nothing blocks the next apply.
    cli("apply", "v2.4", "-y", cwd=applied, check=0)
    assert releases(applied)[0] == ("v2.4", "applied")


@pytest.mark.e2e
@pytest.mark.slow
def test_a_malformed_fault_spec_refuses_the_apply_and_leaves_no_record(applied: Path) -> None:
    proc = cli("apply", "v2.4", "-y", cwd=applied, env={"RELEASE_FAULT": "bogus"})
    assert proc.returncode == 2, proc.stderr
    assert errors(proc.stderr) == ["error: RELEASE_FAULT item 'bogus': expected BOUNDARY:NODE[@HOST][:PHASE]"]
    assert releases(applied) == [("v2.3", "applied")]
    cli("apply", "v2.4", "-y", cwd=applied, check=0)


@pytest.mark.e2e
@pytest.mark.slow
@needs_mode_checks
@pytest.mark.parametrize("target", [".release", ".release/journal.db"])
def test_a_read_only_state_dir_is_still_read(applied: Path, target: str) -> None:
    path = applied / target
    path.chmod(0o500 if path.is_dir() else 0o400)
    try:
        status = run("status", "--json", cwd=applied, drop_override=True)
        history = run("history", "--json", cwd=applied, drop_override=True)
        refused = run("apply", "v2.4", "-y", cwd=applied, drop_override=True)
    finally:
        path.chmod(0o700 if path.is_dir() else 0o600)
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert (st["release"], st["state"], st["services"]["web"]) == ("v2.3", "applied", {"edge1": "v2.3"})
    assert history.returncode == 0, history.stderr
    assert [(r["release"], r["state"]) for r in json.loads(history.stdout)] == [("v2.3", "applied")]
    # Writing needs the state writable: refused before anything ran.
    assert refused.returncode == 2, refused.stderr
    [line] = errors(refused.stderr)
    assert "cannot write" in line and str(applied / ".release") in line, line
    assert current(applied, "edge1", "web") == "v2.3"
    assert releases(applied) == [("v2.3", "applied")]


# ------------------------------------------------------------------------------------ disk full

def run_log_events(root: Path, release: str) -> list[dict]:
    [log] = sorted((root / ".release" / "logs").glob(f"{release}-*.jsonl"))
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.e2e
@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_one_message_and_revert_works(applied: Path) -> None:
    # The journal's write-ahead file grows with every record; 100 KiB is reached mid-release.
    proc = run("apply", "v2.4", "-y", cwd=applied, fsize_kib=100)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr[-3000:]
    [line] = errors(proc.stderr)
    journal = applied / ".release" / "journal.db"
    assert line.startswith(f"error: journal write failed: file too large (the file-size limit, ulimit -f, "
                           f"is 100 KiB): {journal}; "), line
    assert len(line) < 300, line
    # Started steps before the first failed write; none after it.
    events = [e["event"] for e in run_log_events(applied, "v2.4")]
    assert "release.stopping" in events, events
    after = events[events.index("release.stopping"):]
    assert not [e for e in after if e.endswith(".start")], after
    assert any(e == "deploy.start" for e in events[:events.index("release.stopping")]), events
    # Every command that ran on a host was journaled first.
    con = sqlite3.connect(journal)
    try:
        assert con.execute("pragma integrity_check").fetchall() == [("ok",)]
        journaled = set(con.execute("select node, host from steps where phase='apply' and release_id="
                                    "(select max(id) from releases) and status != 'skipped'").fetchall())
    finally:
        con.close()
    started = {(line.split()[3], host) for host in ("app1", "app2", "edge1")
               for line in (applied / ".release" / "hosts" / host / "events.log").read_text().splitlines()
               if " start deploy " in line and line.split()[4] == "v2.4"}
    assert started and started <= journaled, (started, journaled)
    # Without the limit the journal is whole and revert puts every host back.
    cli("revert", "-y", cwd=applied, check=0)
    assert all(current(applied, h, s) == "v2.3" for s, hosts in DEMO_HOSTS.items() for h in hosts)
    assert releases(applied)[0] == ("v2.4", "reverted")


class FillsUp:
    """A run log on a disk that fills up after `room` lines; keeps the events it could write."""

    def __init__(self, room: int) -> None:
        self.room, self.events = room, []

    def write(self, text: str) -> int:
        if len(self.events) >= self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.events.append(json.loads(text)["event"])
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_log_that_fills_up_stops_the_run_at_that_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_demo(tmp_path / "proj")
    log = FillsUp(room=4)
    # The module itself, not the package attribute: the package exports a lazy API of its own.
    monkeypatch.setattr(importlib.import_module("orchestrator.logs"), "open_private_append", lambda path: log)
    with pytest.raises(WriteFailed) as caught:
        orchestrator.apply(root, "v2.3", parallelism=1)
    assert caught.value.message.startswith("log write failed: No space left on device: "
                                           f"{root / '.release' / 'logs'}/v2.3-"), caught.value.message
    # One command at a time: the one whose start was the failed line may run, none after it.
    launched = sum(1 for e in log.events if e.endswith(".start"))
    ran = [r for r in journal_rows(root, "select node, host, status from steps") if r[2] != "skipped"]
    assert len(ran) <= launched + 1, (log.events, ran)
    assert all(r[2] in ("ok", "failed") for r in ran), ran  # every outcome still journaled
    assert releases(root)[0][0] == "v2.3" and releases(root)[0][1] in ("failed", "interrupted")
