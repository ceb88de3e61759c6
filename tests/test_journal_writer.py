"""The run's journal writer: writes that wait together are committed together, each caller
resumes only once its own write is committed, and one failing write fails no other."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.journal_writer import JournalWriter


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'j.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (v INTEGER UNIQUE)"))
    return engine


def _commits(engine: sa.Engine) -> list[int]:
    seen: list[int] = []
    sa.event.listen(engine, "commit", lambda _conn: seen.append(1))
    return seen


def _insert(v: int):  # noqa: ANN202
    def write(conn: sa.Connection) -> int:
        conn.execute(sa.text("INSERT INTO t (v) VALUES (:v)"), {"v": v})
        return v
    return write


def _rows(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(r[0] for r in conn.execute(sa.text("SELECT v FROM t")))


def test_writes_started_together_share_one_commit_and_each_is_committed_when_it_returns(engine: sa.Engine) -> None:
    commits = _commits(engine)
    writer = JournalWriter(engine)

    async def one(v: int) -> list[int]:
        await writer.write(_insert(v))
        return _rows(engine)  # from another connection: the write is committed by now

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(one(v) for v in range(10)))

    seen = asyncio.run(main())
    assert all(v in rows for v, rows in enumerate(seen))
    assert _rows(engine) == list(range(10))
    assert len(commits) == 1


def test_a_failing_write_fails_alone(engine: sa.Engine) -> None:
    writer = JournalWriter(engine)

    async def main() -> list[object]:
        return await asyncio.gather(writer.write(_insert(1)), writer.write(_insert(1)), writer.write(_insert(2)),
                                    return_exceptions=True)

    first, second, third = asyncio.run(main())
    assert (first, third) == (1, 2)
    assert isinstance(second, sa.exc.IntegrityError)
    assert _rows(engine) == [1, 2]
