"""A revision runs in its transaction while its journal intent is being committed, and commits
only once the intent is durable: the statements overlap the journal's fsync, and a revision whose
intent never became durable leaves nothing in the database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from test_history import _version, fast_dir, make_repo  # noqa: F401  # fast_dir: the fixture

WAIT = 10.0  # how long an intent's commit waits for its revision's statements (the old code never ran them)


class Intents:
    """Journal intents of one revision held back until that revision's version-table write has
    run on the migrated database, with what another connection then saw there."""

    def __init__(self, url: str, revision: str) -> None:
        self.url, self.revision = url, revision
        self.ran = threading.Event()
        self.seen: list[str] | None = None  # the committed version while the intent waited
        self.waited: bool | None = None

    def statement(self, conn: sa.Connection, _cursor, statement: str, parameters, _context, _many) -> None:  # noqa: ANN001
        if str(conn.engine.url) == self.url and "alembic_version" in statement and self.revision in f"{statement}{parameters}":
            self.ran.set()

    def before_intent(self, revision: str | None) -> None:
        if revision == self.revision:
            self.waited = self.ran.wait(WAIT)
            self.seen = _version(self.url)


@pytest.fixture
def intents(fast_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:  # noqa: F811
    from orchestrator.journal import Journal

    repo = make_repo(fast_dir / "repo", "sqlite", f"sqlite:///{fast_dir / 'tool.db'}",
                     f"sqlite:///{fast_dir / 'plain.db'}", count=20)
    h = repo.history
    watch = Intents(repo.url, h[5].id)
    failing: dict[str, bool] = {"fail": False}
    write_intent = Journal.write_intent

    def held_back(self: Journal, conn: sa.Connection, release_id: int, **fields) -> int:  # noqa: ANN003
        watch.before_intent(fields.get("revision"))
        if failing["fail"] and fields.get("revision") == watch.revision:
            raise sa.exc.OperationalError("INSERT INTO steps", {}, Exception("database or disk is full"))
        return write_intent(self, conn, release_id, **fields)

    monkeypatch.setattr(Journal, "write_intent", held_back)
    sa.event.listen(sa.Engine, "before_cursor_execute", watch.statement)
    try:
        yield repo, watch, failing
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", watch.statement)


def test_a_revision_runs_while_its_intent_commits_and_commits_after_it(intents: tuple) -> None:
    import orchestrator

    repo, watch, _ = intents
    h = repo.history
    repo.manifest(target=h[8].id)
    t0 = time.monotonic()
    orchestrator.apply(repo.root, "r1")
    # The revision's statements, its version-table write included, had run before its intent was
    # committed (the old walk started them only after: the intent waited the whole WAIT) ...
    assert watch.waited, f"revision {watch.revision} did not run while its intent was written"
    assert time.monotonic() - t0 < WAIT
    # ... but nothing of it was committed: another connection still saw the revision before it.
    assert watch.seen == [h[4].id]
    assert _version(repo.url) == [h[8].id]
    assert [(r, s) for _a, r, s, _d in repo.steps("apply")] == [(x.id, "ok") for x in h.revisions[:9]]


def test_a_revision_whose_intent_cannot_be_written_is_rolled_back(intents: tuple) -> None:
    import orchestrator
    from orchestrator.errors import ReleaseError

    repo, watch, failing = intents
    h = repo.history
    repo.manifest(target=h[8].id)
    failing["fail"] = True
    with pytest.raises(ReleaseError):
        orchestrator.apply(repo.root, "r1")
    # Its statements ran while the intent was being written; the intent failed, so they were
    # rolled back: the database stays at the revision before, with none of the revision's tables.
    assert watch.waited and watch.seen == [h[4].id]
    assert _version(repo.url) == [h[4].id]
    steps = [(r, s) for _a, r, s, _d in repo.steps("apply")]
    assert steps == [(x.id, "ok") for x in h.revisions[:5]]
    failing["fail"] = False
    orchestrator.revert(repo.root)
    assert _version(repo.url) == []
