"""Shared fixtures. The real-parts fixtures live in their own modules:
`fleet.py` (sshd hosts in network namespaces) and `pgserver.py` (a PostgreSQL server)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["fleet", "pgserver"]


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _not_a_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite runs under CI=true in CI, but each test is a user's run, not a pipeline's: a test
    that means to be one sets CI itself (the per-checkout journal warning depends on it)."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
