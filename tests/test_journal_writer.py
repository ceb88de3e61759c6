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


def test_a_held_write_is_committed_with_the_next_write_or_the_flush(engine: sa.Engine) -> None:
    commits = _commits(engine)
    writer = JournalWriter(engine)
    durable: list[int] = []

    async def main() -> None:
        writer.hold(_insert(1), durable=lambda: durable.append(len(commits)))
        await asyncio.sleep(0.05)
        assert (_rows(engine), commits, writer.holding) == ([], [], True)  # not committed on its own
        await writer.write(_insert(2))
        assert (_rows(engine), len(commits), durable) == ([1, 2], 1, [1])  # one commit for both
        writer.hold(_insert(3), durable=lambda: durable.append(len(commits)))
        await writer.flush()
        assert (_rows(engine), len(commits), durable, writer.holding) == ([1, 2, 3], 2, [1, 2], False)
        await writer.flush()  # nothing held: no commit
        assert len(commits) == 2

    asyncio.run(main())


def test_a_held_write_that_fails_fails_the_write_that_carried_it(engine: sa.Engine) -> None:
    writer = JournalWriter(engine)
    durable: list[str] = []

    async def main() -> None:
        await writer.write(_insert(1))
        writer.hold(_insert(1), durable=lambda: durable.append("held"))
        with pytest.raises(sa.exc.IntegrityError):
            await writer.write(_insert(2))
        writer.hold(_insert(2))
        with pytest.raises(sa.exc.IntegrityError):
            await writer.flush()

    asyncio.run(main())
    assert durable == [] and _rows(engine) == [1, 2]  # the carrier itself was committed


def test_a_run_writes_on_one_connection_and_a_failed_write_starts_a_fresh_one(engine: sa.Engine) -> None:
    # A checkout per commit cost a PostgreSQL journal a ping of the server on every step.
    checkouts: list[int] = []
    sa.event.listen(engine, "checkout", lambda *_: checkouts.append(1))
    writer = JournalWriter(engine)

    async def main() -> None:
        for v in range(5):
            await writer.write(_insert(v))
        assert len(checkouts) == 1
        with pytest.raises(sa.exc.IntegrityError):
            await writer.write(_insert(0))
        await writer.write(_insert(5))
        assert len(checkouts) == 2
        await writer.close()
        assert engine.pool.checkedout() == 0
        await writer.write(_insert(6))  # after close, a write opens another
        await writer.close()

    asyncio.run(main())
    assert _rows(engine) == list(range(7))
