"""Live state on real sshd hosts: a fresh checkout in front of running hosts, drift, canary and
soak timed by the hosts' own clocks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import journal_rows
from test_release_ssh import Demo, demo  # noqa: F401 - the fixture

pytestmark = [pytest.mark.ssh, pytest.mark.e2e]


def test_a_fresh_clone_with_an_empty_journal_reverts_to_what_ran(demo: Demo, tmp_path: Path) -> None:
    demo.cli("apply", "v1", "-y", check=0)
    demo.assert_all_at("v1")
    clone = Demo(Path(shutil.copytree(demo.root, tmp_path / "clone", ignore=shutil.ignore_patterns(".release"))),
                 demo.fleet)
    plan = clone.cli_json("plan", "v2")
    for step in (s for s in plan["steps"] if s["kind"] == "service"):
        assert set(step["current"].values()) == {"v1"}, step  # not a first release
    clone.cli("apply", "v2", "-y", check=0)
    demo.assert_all_at("v2")
    assert set(journal_rows(clone.root, "select before from steps where kind='service'")) == {("v1",)}
    clone.cli("revert", "-y", check=0)
    demo.assert_all_at("v1")  # every host back at v1, link and file; nothing removed


def test_drift_on_a_host_is_seen_and_revert_restores_it(demo: Demo) -> None:
    demo.cli("apply", "v1", "-y", check=0)
    host = demo.backend[0]
    home = demo.home(host) / "apps" / "orders"
    (home / "releases" / "v0.9").mkdir()
    (home / "releases" / "v0.9" / "VERSION").write_text("v0.9\n")
    (home / "current").unlink()
    (home / "current").symlink_to("releases/v0.9")
    owner = home.stat()
    for p in (home / "releases" / "v0.9", home / "releases" / "v0.9" / "VERSION", home / "current"):
        os.chown(p, owner.st_uid, owner.st_gid, follow_symlinks=False)  # as if the deploy user did it
    st = demo.cli_json("status", "--live")
    assert {"node": "orders", "host": host, "journal": "v1", "live": "v0.9"} in st["drift"]
    step = next(s for s in demo.cli_json("plan", "v2")["steps"] if s["node"] == "orders")
    assert f"drift: journal says v1, {host} reports v0.9" in [w["message"] for w in step["warnings"]]
    demo.cli("apply", "v2", "-y", check=0)
    demo.cli("revert", "-y", check=0)
    assert demo.current(host, "orders") == "v0.9"
    assert demo.current(demo.backend[1], "orders") == "v1"


def test_canary_and_soak_on_real_hosts(demo: Demo) -> None:
    spec = demo.root / "services.d" / "orders.yaml"
    spec.write_text(spec.read_text() + "canary: 1\nsoak: 3\n")
    demo.cli("apply", "v1", "-y", check=0)
    first, second = demo.backend[0], demo.backend[1]
    end_first = max(e[0] for e in demo.events(first) if e[1:4] == ("end", "deploy", "orders"))
    start_second = min(e[0] for e in demo.events(second) if e[1:4] == ("start", "deploy", "orders"))
    assert start_second - end_first >= 3.0
    # Now a health check that starts failing during the soak: the other hosts stay untouched.
    text = spec.read_text().replace("health: ", "health: test ! -e broken && ", 1)
    spec.write_text(text.replace("deploy: |\n  set -e\n", "deploy: |\n  set -e\n  (sleep 1; touch broken) >/dev/null 2>&1 </dev/null &\n", 1))
    proc = demo.cli("apply", "v2", "-y")
    assert proc.returncode == 1 and "while soaking" in proc.stderr, proc.stderr
    assert demo.current(first, "orders") == "v2"
    assert all(demo.current(h, "orders") == "v1" for h in demo.backend[1:])
