"""Local commands die with the tool: a deploy still running when `release` is SIGKILLed (the
OOM killer, `kill -9`) must not finish after the revert that follows and put the new version
back while the journal says the old one is in place.

The CLI runs in a session of its own, as a terminal job; the project is one local host whose
deploy writes VERSION after a long sleep (the revert writes at once).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from helpers import cli, cli_json, journal_rows, spawn, wait_for, write

pytestmark = pytest.mark.e2e  # release runs as a process of its own

DEPLOY_SECONDS = 8

PROJECT = {
    "services.d/hosts.yaml": "hosts:\n  h1: {transport: local}\n",
    "services.d/app.yaml": (
        "hosts: [h1]\n"
        "deploy: |\n"
        '  echo "$RELEASE_ACTION $RELEASE_VERSION" >> actions.log\n'
        f'  [ "$RELEASE_ACTION" = deploy ] && sleep {DEPLOY_SECONDS}; printf %s "$RELEASE_VERSION" > VERSION\n'
        "timeout: 60\n"
    ),
}


def host_file(root: Path, name: str) -> str:
    path = root / ".release" / "hosts" / "h1" / name
    return path.read_text() if path.exists() else ""


def commands_in(root: Path) -> list[psutil.Process]:
    """Processes working in the project's host directory: the commands and what they started."""
    hosts = str(root / ".release" / "hosts")
    out = []
    for p in psutil.process_iter():
        try:
            if p.cwd().startswith(hosts) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def start(root: Path, *args: str) -> subprocess.Popen:
    return spawn(root, *args, session=True, stdout=subprocess.DEVNULL)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["pid", "group"])
def test_killed_tool_leaves_no_deploy_to_overwrite_the_revert(tmp_path: Path, how: str) -> None:
    """`pid`: only the tool's process dies, as with the OOM killer or `kill -9 PID`. `group`: its
    whole process group, as a terminal's job. Either way its deploy dies with it; the takeover
    of its lock makes sure of that and says so."""
    root = write(tmp_path / "p", PROJECT)
    cli("apply", "v1", "-y", cwd=root, check=0)
    assert host_file(root, "VERSION") == "v1"
    proc = start(root, "apply", "v2", "-y")
    try:
        wait_for(lambda: any(p.name() == "sleep" for p in commands_in(root)), what="the v2 deploy to start")
        if how == "group":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        killed_at = time.monotonic()

        rev = cli("revert", "-y", cwd=root)
        assert rev.returncode == 0, rev.stderr
        assert "release v2 reverted" in rev.stdout
        assert "lock.takeover" in rev.stderr
        assert host_file(root, "VERSION") == "v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Long after the deploy would have ended: nothing of it wrote v2 behind the revert's back.
    time.sleep(max(0.0, killed_at + DEPLOY_SECONDS + 1.5 - time.monotonic()))
    assert host_file(root, "VERSION") == "v1"
    assert not commands_in(root)
    st = cli_json("status", cwd=root)
    assert (st["release"], st["state"], st["services"]) == ("v2", "reverted", {"app": {"h1": "v1"}})
    [step] = cli_json("plan", "v1", cwd=root)["steps"]
    assert (step["action"], step["current"]) == ("unchanged", {"h1": "v1"})
    # The takeover looked for the dead tool's commands: they had died with it.
    [(detail,)] = journal_rows(root, "select detail from events where event='lock_takeover'")
    assert "none of its commands still runs" in detail, detail
