"""Shared fixtures and the test layers. The real-parts fixtures live in their own modules:
`fleet.py` (sshd hosts in network namespaces) and `pgserver.py` (a PostgreSQL server).

The layers are markers (docs/development.md, "Tests"):

- `ssh`: uses the sshd fleet, given to every test that uses the `fleet` fixture;
- `postgres`: uses the PostgreSQL server, given to every test that uses `pg` or `pg_db`;
- `slow`: crash, kill and fault sweeps, and other tests of several seconds, marked in their files;
- `e2e`: starts `release` as a process of its own (`helpers.cli`, `helpers.spawn`), marked in
  their files; such a test without the marker fails, saying so.

`pytest -m "not ssh and not postgres and not slow"` is the fast layer.
"""

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# Temporary directories (tmp_path and the real parts' own) go to memory when the machine has a
# tmpfs at /dev/shm and TMPDIR does not say otherwise: the journals' and databases' fsyncs are
# most of an in-process release's time on a disk. pytest keeps the last three runs' as usual.
if "TMPDIR" not in os.environ and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
    tempfile.tempdir = "/dev/shm"

pytest_plugins = ["fleet", "pgserver"]


import pytest  # noqa: E402

import helpers  # noqa: E402

# A test using one of these fixtures (directly or through another fixture) gets the marker.
MARKER_OF_FIXTURE = {"fleet": "ssh", "pg": "postgres", "pg_db": "postgres"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            marker = MARKER_OF_FIXTURE.get(fixture)
            if marker and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item):  # noqa: ANN201
    """Lets helpers.cli and helpers.spawn check that the test says it starts processes; set
    before any fixture, module-scoped ones included, is set up for it."""
    helpers.in_e2e_test = item.get_closest_marker("e2e") is not None
    try:
        return (yield)
    finally:
        helpers.in_e2e_test = False


@pytest.fixture(autouse=True)
def _not_a_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite runs under CI=true in CI, but each test is a user's run, not a pipeline's: a test
    that means to be one sets CI itself (the per-checkout journal warning depends on it)."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """A fresh copy of the embedded demo, `local` hosts and SQLite, with no .release state."""
    return helpers.copy_demo(tmp_path / "repo")
