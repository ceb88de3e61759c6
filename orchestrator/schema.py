"""A database's schema steps: one journaled step per Alembic revision, the scripts archived with
the release before the first one, and the revert policy for revisions that cannot be undone.

A revert goes down revision by revision. It stops at the first revision without a working
downgrade (a journaled, failed step that names it); with --force it skips that revision's
downgrade instead, as a journaled `skip` step that moves the version table past it without running
its code, and goes on down. Either way the version table always names a revision whose changes
are all there: the schema is never left between two revisions.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from . import migrations
from .errors import ReleaseError
from .manifests import DatabaseSpec, Project
from .plan import runner_for
from .steps import Run, StepIntent, StepReport, StepResult

if TYPE_CHECKING:
    from .migrations import Hop, MigrationRunner

Job = Callable[[], Awaitable[bool]]
Action = Callable[["Hop"], str]


def _revert_action(hop: Hop) -> str:
    # A revert takes a database that its release moved down back up: say which way it goes.
    return "downgrade" if hop.direction == "down" else "upgrade"


class Schema:
    def __init__(self, run: Run, project: Project) -> None:
        self.run = run
        self.project = project

    async def _step(self, spec: DatabaseSpec, session: migrations.Session, hop: Hop, action: str, *,
                    skip: str | None = None, more: bool = False) -> bool:
        """One revision, journaled; `skip`: the --force note of a downgrade that is not run;
        `more`: another revision follows, whose intent can carry this one's outcome."""
        async def start(go: Future[bool]) -> str | None:
            try:
                await session.apply(hop, skip=skip is not None, go=go)
                return None
            except ReleaseError as exc:
                return str(exc)

        async def finish(failure: str | None) -> StepResult:
            return StepResult(failure is None, 0 if failure is None else 1, detail=failure or skip)

        intent = StepIntent(spec.name, "database", action, revision=hop.revision, before=hop.from_rev,
                            after=hop.to_rev)
        # Early: the revision runs in its transaction while its intent is written, and commits
        # only once the intent is durable.
        return await self.run.step(intent, start, finish, hold_outcome=more, early=True,
                                   direction=hop.direction)

    async def _walk(self, spec: DatabaseSpec, runner: MigrationRunner, session: migrations.Session,
                    hops: list[Hop], action: Action, blocked: dict[str, str], force: bool) -> bool:
        """Hop by hop, each revision journaled and committed on its own, on the session's one
        connection. `blocked`: revisions whose downgrade cannot run, and why. Between two
        revisions the first one's outcome is held and committed with the second one's intent."""
        try:
            return await self._hops(spec, runner, session, hops, action, blocked, force)
        finally:
            await self.run.writer.flush()  # the last outcome held, whichever way the walk ended

    async def _hops(self, spec: DatabaseSpec, runner: MigrationRunner, session: migrations.Session,
                    hops: list[Hop], action: Action, blocked: dict[str, str], force: bool) -> bool:
        for i, hop in enumerate(hops):
            more = i + 1 < len(hops)
            if self.run.stopping:
                self.run.skipped(spec.name, "database", "release stopping", action=action(hop),
                                 revision=hop.revision)
                return False
            why = blocked.get(hop.revision) if hop.direction == "down" else None
            if why is None:
                ok = await self._step(spec, session, hop, action(hop), more=more)
            elif force:
                note = (f"--force: the downgrade of revision {runner.scripts.label(hop.revision)} was not run "
                        f"({why}); the version table now says {hop.to_rev or 'base'}, and the schema keeps "
                        f"what {hop.revision} did")
                self.run.log.warning("downgrade.skipped", node=spec.name, revision=hop.revision, why=note)
                ok = await self._step(spec, session, hop, "skip", skip=note, more=more)
            else:
                await self._refuse(spec, runner, hop, why, [h.revision for h in hops[i:]])
                return False
            if not ok:
                return False
        return True

    async def _refuse(self, spec: DatabaseSpec, runner: MigrationRunner, hop: Hop, why: str,
                      remaining: list[str]) -> None:
        """The stop of a revert at a revision it cannot undo, journaled as that revision's failed
        downgrade: the journal then says where the schema is and why it stays there."""
        detail = (f"revision {runner.scripts.label(hop.revision)} of {spec.name} has no working downgrade "
                  f"({why}); the revert stopped there, and the schema stays at {hop.revision} with "
                  f"{_count(remaining)} of the release still applied: {_abbrev(remaining)}. "
                  f"`release revert --force` skips this downgrade (the version table then says "
                  f"{hop.to_rev or 'base'}; the schema keeps what {hop.revision} did) and goes on down")

        async def start() -> None:
            return None

        async def finish(_: None) -> StepResult:
            return StepResult(False, detail=detail)

        intent = StepIntent(spec.name, "database", "downgrade", revision=hop.revision, before=hop.from_rev,
                            after=hop.to_rev)
        await self.run.step(intent, start, finish, direction=hop.direction)

    def _refused(self, spec: DatabaseSpec, action: str, why: str) -> bool:
        """A database job that cannot start (scripts that will not load, a database out of reach):
        said once, cleanly, and the run fails."""
        self.run.log.error(f"{action}.failed", node=spec.name, why=why)
        self.run.reports.append(StepReport(spec.name, "database", None, action, "failed", 1, detail=why))
        self.run.fail(why)
        return False

    async def _resolve(self, spec: DatabaseSpec, heads: tuple[str, ...]) -> None:
        """A step left in doubt by a crash is decided by where the database is now."""
        await asyncio.to_thread(self.run.journal.resolve_database, spec.name, _head(heads))

    def migrate_job(self, spec: DatabaseSpec, target: str, planned: MigrationRunner | None = None) -> Job:
        """`planned`: the plan's runner for this database, whose connection the migration goes on with."""
        async def job() -> bool:
            try:
                runner = planned or runner_for(self.project, spec)
                # Archived before the first intent: a crash after it still leaves the downgrade code.
                files = await migrations.in_worker(migrations.archive, runner.script_location)
                journal, release_id = self.run.journal, self.run.release_id
                earlier = await asyncio.to_thread(journal.archived, release_id, spec.name)
                if earlier:  # a resumed apply: keep what the first attempt may have applied
                    files = migrations.merge_archives(earlier, files)
                await asyncio.to_thread(journal.archive, release_id, spec.name, files)
            except ReleaseError as exc:
                return self._refused(spec, "migrate", str(exc))
            async with runner.session(target) as session:
                try:
                    # From wherever the database really is (its Alembic heads).
                    heads, hops = await session.call(lambda heads: (heads, runner.hops(_head(heads), target)))
                    await self._resolve(spec, heads)
                except ReleaseError as exc:
                    return self._refused(spec, "migrate", str(exc))
                return await self._walk(spec, runner, session, hops, lambda _: "migrate", {}, False)
        return job

    def downgrade_job(self, spec: DatabaseSpec, restore: str | None, force: bool) -> Job:
        async def job() -> bool:
            files = await asyncio.to_thread(self.run.journal.archived, self.run.release_id, spec.name)
            with tempfile.TemporaryDirectory(prefix=f"release-{spec.name}-", dir=migrations.scratch()) as tmp:
                try:
                    location = migrations.restore(files, Path(tmp)) if files else None
                    runner = runner_for(self.project, spec, location)
                except ReleaseError as exc:
                    return self._refused(spec, "downgrade", str(exc))
                async with runner.session(restore) as session:
                    try:
                        heads, (hops, blocked) = await session.call(
                            lambda heads: (heads, _revert_plan(runner, heads, restore)))
                        await self._resolve(spec, heads)
                    except ReleaseError as exc:
                        return self._refused(spec, "downgrade", str(exc))
                    return await self._walk(spec, runner, session, hops, _revert_action, blocked, force)
        return job


def _head(heads: tuple[str, ...]) -> str | None:
    return heads[0] if heads else None


def _revert_plan(runner: MigrationRunner, heads: tuple[str, ...], restore: str | None) -> tuple[
        list[Hop], dict[str, str]]:
    """The hops back to `restore`, and why each downgrade that cannot run cannot."""
    hops = runner.hops(_head(heads), restore)
    return hops, {h.revision: why for h in hops if h.direction == "down" and (why := runner.irreversible(h.revision))}


def _count(revisions: list[str]) -> str:
    return f"{len(revisions)} revision{'s' if len(revisions) != 1 else ''}"


def _abbrev(revisions: list[str], keep: int = 4) -> str:
    """A long list of revisions as its first few and its last, not as one endless line."""
    if len(revisions) <= keep + 1:
        return ", ".join(revisions)
    return f"{', '.join(revisions[:keep])}, ... ({len(revisions) - keep - 1} more), {revisions[-1]}"
