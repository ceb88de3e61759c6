"""The test suite's own tools: `helpers.run` behaves as a separate `release` process would and
leaves nothing of its run behind; the layers' markers are given and enforced."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import helpers
from helpers import cli, run, spawn, write
from orchestrator import secrets


@pytest.mark.e2e
def test_run_in_process_gives_what_the_process_gives(demo: Path) -> None:
    def both(*args: str) -> None:
        inside, outside = run(*args, cwd=demo), cli(*args, cwd=demo)
        assert (inside.returncode, inside.stdout, inside.stderr) == \
            (outside.returncode, outside.stdout, outside.stderr), args

    both("plan", "v2.3", "--json")
    write(demo, {"services.d/web.yaml": "hosts: [edge9]\ndeploy: 'true'\n"})
    both("validate")


def test_run_leaves_the_process_as_it_found_it(demo: Path, tmp_path: Path) -> None:
    write(demo, {"services.d/release.yaml": "secrets: [SHOP_PASSPHRASE]\n"})
    cwd, env, streams = os.getcwd(), dict(os.environ), (sys.stdin, sys.stdout, sys.stderr)
    registered = set(secrets._registered)
    result = run("apply", "v2.3", cwd=demo, env={"SHOP_PASSPHRASE": "x" * 12, "CI": "true"}, check=0)
    assert "applied" in result.stdout
    assert (os.getcwd(), dict(os.environ), (sys.stdin, sys.stdout, sys.stderr)) == (cwd, env, streams)
    assert secrets._registered == registered  # a later run in this process masks only its own
    # The run log is closed: another project's run writes its own.
    other = helpers.copy_demo(tmp_path / "other")
    run("apply", "v2.3", cwd=other, check=0)
    assert len(list((other / ".release" / "logs").glob("*.jsonl"))) == 1
    assert len(list((demo / ".release" / "logs").glob("*.jsonl"))) == 1


def test_a_fault_is_refused_in_process(demo: Path) -> None:
    with pytest.raises(AssertionError, match="use cli"):
        run("apply", "v2.3", cwd=demo, env={"RELEASE_FAULT": "after-intent:web@edge1"})
    assert not (demo / ".release").exists()


def test_starting_a_process_without_the_e2e_marker_names_the_marker(demo: Path) -> None:
    for start in (lambda: cli("validate", cwd=demo), lambda: spawn(demo, "validate")):
        with pytest.raises(AssertionError, match=r"mark it @pytest\.mark\.e2e"):
            start()


class _Item:
    """What the marker hook reads of a collected test."""

    def __init__(self, *fixtures: str, marked: tuple[str, ...] = ()) -> None:
        self.fixturenames = list(fixtures)
        self.markers = list(marked)

    def get_closest_marker(self, name: str) -> object:
        return name if name in self.markers else None

    def add_marker(self, marker: str) -> None:
        self.markers.append(marker)


def test_fixtures_give_their_markers() -> None:
    from conftest import pytest_collection_modifyitems

    items = [_Item("tmp_path", "fleet"), _Item("pg_db", "pg"), _Item("demo"), _Item("fleet", marked=("ssh",))]
    pytest_collection_modifyitems(items)  # type: ignore[arg-type]
    assert [item.markers for item in items] == [["ssh"], ["postgres"], [], ["ssh"]]
