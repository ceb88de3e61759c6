"""The shell that runs around a command on an SSH host, run here under /bin/sh as sshd would run
it: the watcher kills the command when the controller goes silent or away, on hosts with bash
(`read -t`) and on hosts with only POSIX sh and coreutils (`timeout` + `head`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import wait_for
from orchestrator.transports.base import Command
from orchestrator.transports.ssh_remote import wrapper

pytestmark = pytest.mark.slow  # each case waits out a silence of a second or more


@pytest.fixture(params=["bash", "sh-only"])
def host_path(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "bash":
        return os.environ["PATH"]
    tools = tmp_path / "bin"  # a host without bash: what the wrapper needs, and no more
    tools.mkdir()
    for tool in ("timeout", "head", "sleep", "touch", "pkill"):
        (tools / tool).symlink_to(shutil.which(tool))
    return str(tools)


def start(home: Path, path: str, script: str, silence: int) -> subprocess.Popen:
    home.mkdir(exist_ok=True)
    # sshd starts the login shell as a session leader: the watcher kills that group.
    return subprocess.Popen(["/bin/sh", "-c", wrapper(Command(script), "MARK", silence)],
                            env={"HOME": str(home), "PATH": path}, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_silent_controller_gets_its_command_killed(tmp_path: Path, host_path: str) -> None:
    proc = start(tmp_path / "home", host_path, "sleep 30; touch late", silence=1)
    proc.wait(timeout=30)  # no heartbeat for a second: killed, long before the sleep ends
    wait_for(lambda: group_gone(proc.pid), what="the command's process group to be gone")
    assert not (tmp_path / "home" / "late").exists()


def test_heartbeats_keep_the_command_alive_and_leave_nothing_behind(tmp_path: Path, host_path: str) -> None:
    proc = start(tmp_path / "home", host_path, "sleep 2.5; touch done", silence=1)
    assert proc.stdin is not None
    while proc.poll() is None:  # a line every 0.2 s, as the transport sends one per interval
        try:
            proc.stdin.write(b".\n")
            proc.stdin.flush()
        except BrokenPipeError:
            break
        time.sleep(0.2)
    assert proc.returncode == 0
    assert (tmp_path / "home" / "done").exists()
    assert proc.stdout is not None and proc.stdout.read().startswith(b"MARK ")
    wait_for(lambda: group_gone(proc.pid), what="the watcher to be gone with its command")


def test_a_closed_connection_kills_the_command_at_once(tmp_path: Path, host_path: str) -> None:
    proc = start(tmp_path / "home", host_path, "sleep 30; touch late", silence=60)
    assert proc.stdin is not None
    proc.stdin.close()  # end of file: the connection went away
    proc.wait(timeout=30)
    wait_for(lambda: group_gone(proc.pid), what="the command's process group to be gone")
    assert not (tmp_path / "home" / "late").exists()


def test_the_commands_own_path_does_not_blind_the_watcher(tmp_path: Path, host_path: str) -> None:
    # The command's environment (the RELEASE_* variables and a transport plugin's own) used to be
    # exported before the watcher started: one that set PATH hid `timeout` from it, and the watcher
    # then waited for end of file only, so a controller that lost its network left the command running.
    proc = subprocess.Popen(
        ["/bin/sh", "-c", wrapper(Command("/bin/sleep 30; /usr/bin/touch late", env={"PATH": str(tmp_path / "app-bin")}),
                                  "MARK", 1)],
        env={"HOME": str(tmp_path), "PATH": host_path}, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    wait_for(lambda: group_gone(proc.pid), what="the command's process group to be gone")
    assert not (tmp_path / "late").exists()
