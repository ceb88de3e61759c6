"""Output that nobody reads any more (`release apply v2.5 | head -1`) never stops a release, and
off a terminal apply shows its plan before it runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import copy_demo, current, run, spawn


HOSTS = {"catalog": ["app1", "app2"], "accounts": ["app1", "app2"], "inventory": ["app1", "app2"],
         "orders": ["app1", "app2"], "payments": ["app2"], "notifications": ["app1"], "web": ["edge1"]}


def _assert_applied(demo: Path, version: str) -> None:
    for service, hosts in HOSTS.items():
        for host in hosts:
            assert current(demo, host, service) == version, (service, host)
    st = json.loads(run("status", "--json", cwd=demo, check=0).stdout)
    assert (st["release"], st["state"]) == (version, "applied")
    assert not any('"node.crashed"' in line for p in (demo / ".release" / "logs").glob("*.jsonl")
                   for line in p.read_text().splitlines())


@pytest.mark.e2e
def test_stdout_and_stderr_closed_at_once(tmp_path: Path) -> None:
    demo = copy_demo(tmp_path / "demo")
    proc = spawn(demo, "apply", "v2.5", "-y", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the readers go away before the first line
    proc.stderr.close()
    assert proc.wait(timeout=120) == 0
    _assert_applied(demo, "v2.5")


@pytest.mark.slow
@pytest.mark.e2e
def test_json_logs_read_by_head_3(tmp_path: Path) -> None:
    # release --log-format json apply v2.5 -y 2>&1 >/dev/null | head -3
    demo = copy_demo(tmp_path / "demo")
    proc = spawn(demo, "--log-format", "json", "apply", "v2.5", "-y",
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines = [json.loads(proc.stderr.readline()) for _ in range(3)]
    proc.stderr.close()
    assert lines[0]["event"] == "release.start"
    assert proc.wait(timeout=120) == 0
    _assert_applied(demo, "v2.5")


def test_the_console_sink_survives_a_closed_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.logs import configure, get_logger

    read, write = os.pipe()
    os.close(read)
    dead = os.fdopen(write, "w")
    monkeypatch.setattr(sys, "stderr", dead)
    try:
        configure()
        log = get_logger(release="v2.5")
        log.info("one")  # the first write finds the reader gone
        log.warning("two")
    finally:
        monkeypatch.undo()
        dead.close()  # its fd now points at /dev/null: closing flushes nowhere, and does not raise


def test_apply_off_a_terminal_prints_the_plan_first(tmp_path: Path) -> None:
    demo = copy_demo(tmp_path / "demo")
    out = run("apply", "v2.5", cwd=demo, check=0).stdout
    assert out.index("Plan: 2 to migrate") < out.index("release v2.5 applied")
    assert "wave 1:" in out
    demo2 = copy_demo(tmp_path / "demo2")
    assert "steps" in json.loads(run("apply", "v2.5", "--json", cwd=demo2, check=0).stdout)
