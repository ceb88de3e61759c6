"""An apply or a revert runs with the heap frozen (full garbage collections skip what the command
loaded) and thaws it as it returns; a caller's own freeze is left alone."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import orchestrator
from orchestrator import heap
from orchestrator.migrations import session
from test_history import make_repo, fast_dir  # noqa: F401  # fast_dir: the fixture


@pytest.fixture(autouse=True)
def thawed() -> None:
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()


def test_apply_and_revert_run_on_a_frozen_heap_and_thaw_it(fast_dir: Path,  # noqa: F811
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(fast_dir / "repo", "sqlite", f"sqlite:///{fast_dir / 'tool.db'}",
                     f"sqlite:///{fast_dir / 'plain.db'}", count=40)
    repo.manifest(target=repo.history[4].id)
    during: list[int] = []
    serve = session.HopSession.serve
    monkeypatch.setattr(session.HopSession, "serve", lambda self: (during.append(gc.get_freeze_count()), serve(self)))
    orchestrator.apply(repo.root, "r1")
    assert gc.get_freeze_count() == 0
    orchestrator.revert(repo.root)
    assert gc.get_freeze_count() == 0
    assert len(during) == 2 and all(during)


def test_a_heap_the_caller_froze_stays_frozen() -> None:
    calls: list[int] = []

    @heap.frozen
    def command() -> None:
        calls.append(gc.get_freeze_count())
        heap.freeze()

    command()
    assert calls[0] > 0 and gc.get_freeze_count() == 0
    gc.freeze()
    frozen = gc.get_freeze_count()
    command()
    assert gc.get_freeze_count() >= frozen
