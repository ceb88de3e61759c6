"""A database's migration in one run: one engine and one connection, from the plan's read of its
heads to the last revision, and env.py run once; closed when the run ends, whichever way."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

import orchestrator
from orchestrator.errors import StepFailed
from orchestrator.migrations import MigrationRunner
from test_history import _version, fast_dir, make_repo  # noqa: F401  # fast_dir: the fixture


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    seen: dict[str, list] = {"engines": [], "connections": [], "env": []}
    make_engine, connect, run_env = MigrationRunner._engine, MigrationRunner._connect, ScriptDirectory.run_env

    def engine(self: MigrationRunner):  # noqa: ANN202
        e = make_engine(self)
        seen["engines"].append(e)
        return e

    def connection(self: MigrationRunner, engine):  # noqa: ANN001, ANN202
        c = connect(self, engine)
        seen["connections"].append(c)
        return c

    def env(self: ScriptDirectory) -> None:
        seen["env"].append(self.dir)
        run_env(self)

    monkeypatch.setattr(MigrationRunner, "_engine", engine)
    monkeypatch.setattr(MigrationRunner, "_connect", connection)
    monkeypatch.setattr(ScriptDirectory, "run_env", env)
    return seen


def test_an_apply_migrates_on_the_connection_its_plan_read_the_heads_on(fast_dir: Path,  # noqa: F811
                                                                        counted: dict[str, list]) -> None:
    repo = make_repo(fast_dir / "repo", "sqlite", f"sqlite:///{fast_dir / 'tool.db'}",
                     f"sqlite:///{fast_dir / 'plain.db'}", count=40)
    h = repo.history
    repo.manifest(target=h[3].id)
    orchestrator.apply(repo.root, "r1")  # creates the database: the plan had nothing to read
    repo.manifest(target=h[9].id)
    for seen in counted.values():
        seen.clear()
    orchestrator.apply(repo.root, "r2")
    assert _version(repo.url) == [h[9].id]
    # The plan's engine and connection, which the migration went on with; closed with the run.
    assert (len(counted["engines"]), len(counted["connections"]), len(counted["env"])) == (1, 1, 1)
    assert counted["connections"][0].closed

    for seen in counted.values():
        seen.clear()
    repo.manifest(target=h[11].id)
    with pytest.raises(StepFailed):  # refused after the plan: its connection is closed all the same
        orchestrator.apply(repo.root, "r3", confirm=lambda _plan: False)
    assert len(counted["connections"]) == 1 and counted["connections"][0].closed


def test_the_plan_leaves_a_connection_that_a_session_still_uses_to_the_session(tmp_path: Path) -> None:
    """After a second interrupt the loop may end with a revision still running on the worker:
    closing the connection under it from the main thread is left to the session."""
    import threading

    runner = MigrationRunner("db", f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    conn = runner.connection()
    held, done = threading.Event(), threading.Event()

    def session() -> None:
        with runner.busy:
            held.set()
            done.wait(10)

    worker = threading.Thread(target=session)
    worker.start()
    held.wait(10)
    runner.close(if_idle=True)
    assert not conn.closed
    done.set()
    worker.join()
    runner.close(if_idle=True)
    assert conn.closed


def test_a_revert_writes_its_copy_of_the_scripts_to_memory_unless_tmpdir_says_otherwise(
        fast_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import os
    import tempfile

    from orchestrator.migrations import scratch

    repo = make_repo(fast_dir / "repo", "sqlite", f"sqlite:///{fast_dir / 'tool.db'}",
                     f"sqlite:///{fast_dir / 'plain.db'}", count=40)
    repo.manifest(target=repo.history[3].id)
    orchestrator.apply(repo.root, "r1")
    made: list[str | None] = []
    real = tempfile.TemporaryDirectory

    def recorded(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        made.append(kwargs.get("dir"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryDirectory", recorded)
    monkeypatch.delenv("TMPDIR", raising=False)
    orchestrator.revert(repo.root)
    assert _version(repo.url) == []
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    assert made == [shm]
    monkeypatch.setenv("TMPDIR", str(fast_dir))
    assert scratch() is None
