"""Between two revisions a database walk holds the first one's outcome and commits it with the
second one's intent: one journal commit per revision instead of two, and a crash anywhere in
between leaves at most the newest step in doubt, which the database's version table decides."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from test_history import DB, _version, fast_dir, make_repo  # noqa: F401  # fast_dir: the fixture

pytestmark = pytest.mark.e2e  # release runs as a process of its own


def _repo(fast_dir: Path, count: int = 40):  # noqa: ANN202, F811
    return make_repo(fast_dir / "repo", "sqlite", f"sqlite:///{fast_dir / 'tool.db'}",
                     f"sqlite:///{fast_dir / 'plain.db'}", count=count)


def test_nine_revisions_cost_ten_journal_commits_not_eighteen(fast_dir: Path) -> None:  # noqa: F811
    import orchestrator

    repo = _repo(fast_dir)
    h = repo.history
    repo.manifest(target=h[8].id)
    journal = str(repo.root / ".release" / "journal.db")
    commits: list[str] = []

    def counted(conn: sa.Connection) -> None:
        # The step writes are the ones the run's writer thread commits; the release record,
        # lock and archive are written elsewhere and are not what this is about.
        if conn.engine.url.database == journal and threading.current_thread().name.startswith("journal-writer"):
            commits.append(threading.current_thread().name)

    sa.event.listen(sa.Engine, "commit", counted)
    try:
        orchestrator.apply(repo.root, "r1")
        applied = len(commits)
        commits.clear()
        orchestrator.revert(repo.root)
        reverted = len(commits)
    finally:
        sa.event.remove(sa.Engine, "commit", counted)
    assert _version(repo.url) == []
    # The first intent; then the outcome of each revision with the next one's intent (8); the
    # last outcome: 10, where one commit per write made 18.
    assert (applied, reverted) == (10, 10)
    assert [(r, s) for _a, r, s, _d in repo.steps("apply")] == [(x.id, "ok") for x in h.revisions[:9]]
    assert [(r, s) for _a, r, s, _d in repo.steps("revert")] == [(x.id, "ok") for x in reversed(h.revisions[:9])]


@pytest.mark.slow  # a kill and a revert per boundary
@pytest.mark.parametrize("boundary", ["after-command", "before-intent", "after-outcome", "after-intent"])
def test_a_crash_between_two_revisions_leaves_at_most_one_step_in_doubt(fast_dir: Path,  # noqa: F811
                                                                          boundary: str) -> None:
    """A kill on either side of the commit that carries revision k's outcome and k+1's intent
    leaves every earlier revision journaled `ok`, at most the newest step in doubt, and a journal
    from which `release revert` takes the database back to base."""
    repo = _repo(fast_dir)
    h, k = repo.history, 5
    assert all(r.reversible for r in h.revisions[:9])
    repo.manifest(target=h[8].id)
    ran_last = boundary in ("after-command", "before-intent")  # the kill comes before k+1's intent
    where = h[k].id if boundary in ("after-command", "after-outcome") else h[k + 1].id
    proc = repo.run("apply", "r1", env={"RELEASE_FAULT": f"{boundary}:{DB}@{where}"})
    assert proc.returncode == -9, proc.stderr
    assert _version(repo.url) == [h[k].id]  # revision k committed, k+1 never began
    steps = [(r, s) for _a, r, s, _d in repo.steps("apply")]
    expected = [(x.id, "ok") for x in h.revisions[:k]]
    # after-outcome fires once k's outcome is durable, which it is with k+1's intent.
    expected += [(h[k].id, "intent")] if ran_last else [(h[k].id, "ok"), (h[k + 1].id, "intent")]
    assert steps == expected

    repo.run("revert", check=0)
    assert _version(repo.url) == []
    assert [s for _a, _r, s, _d in repo.steps("apply")].count("intent") == 0  # decided by reading the database
    assert [(a, r, s) for a, r, s, _ in repo.steps("revert")] == [
        ("downgrade", x.id, "ok") for x in reversed(h.revisions[:k + 1])]
