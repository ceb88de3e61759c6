"""A database's schema steps: one journaled step per Alembic revision, the scripts archived with
the release before the first one, and the downgrade policy of a revert."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from . import migrations
from .errors import ReleaseError
from .manifests import DatabaseSpec, Project
from .migrations import Hop, MigrationRunner
from .plan import runner_for
from .steps import Run, StepIntent, StepReport, StepResult

Job = Callable[[], Awaitable[bool]]


class Schema:
    def __init__(self, run: Run, project: Project) -> None:
        self.run = run
        self.project = project

    async def hop(self, spec: DatabaseSpec, runner: MigrationRunner, hop: Hop, action: str) -> bool:
        async def start() -> str | None:
            try:
                await migrations.in_worker(runner.apply_hop, hop)
                return None
            except ReleaseError as exc:
                return str(exc)

        async def finish(failure: str | None) -> StepResult:
            return StepResult(failure is None, 0 if failure is None else 1, detail=failure)

        intent = StepIntent(spec.name, "database", action, revision=hop.revision, before=hop.from_rev,
                            after=hop.to_rev)
        return await self.run.step(intent, start, finish, direction=hop.direction)

    async def migrate(self, spec: DatabaseSpec, runner: MigrationRunner, target: str | None, action: str) -> bool:
        """Hop by hop to `target`, each revision journaled and committed on its own."""
        heads = await migrations.in_worker(runner.current_heads)
        current = heads[0] if heads else None
        await asyncio.to_thread(self.run.journal.resolve_database, spec.name, current)
        # Loading scripts takes Alembic's lock, held by a running revision: not on the loop.
        hops = await migrations.in_worker(runner.hops, current, target)
        for hop in hops:
            if self.run.stopping:
                self.run.skipped(spec.name, "database", "release stopping", action=action, revision=hop.revision)
                return False
            if not await self.hop(spec, runner, hop, action):
                return False
        return True

    def migrate_job(self, spec: DatabaseSpec, target: str) -> Job:
        async def job() -> bool:
            runner = runner_for(self.project, spec)
            # Archived before the first intent: a crash after it still leaves the downgrade code.
            files = await migrations.in_worker(migrations.archive, runner.script_location)
            journal, release_id = self.run.journal, self.run.release_id
            earlier = await asyncio.to_thread(journal.archived, release_id, spec.name)
            if earlier:  # a resumed apply: keep what the first attempt may have applied
                files = migrations.merge_archives(earlier, files)
            await asyncio.to_thread(journal.archive, release_id, spec.name, files)
            return await self.migrate(spec, runner, target, "migrate")
        return job

    def downgrade_job(self, spec: DatabaseSpec, restore: str | None, force: bool) -> Job:
        async def job() -> bool:
            files = await asyncio.to_thread(self.run.journal.archived, self.run.release_id, spec.name)
            with tempfile.TemporaryDirectory(prefix=f"release-{spec.name}-") as tmp:
                location = migrations.restore(files, Path(tmp)) if files else None
                runner = runner_for(self.project, spec, location)
                heads = await migrations.in_worker(runner.current_heads)
                current = heads[0] if heads else None

                def irreversible() -> list[str]:
                    return [h.revision for h in runner.hops(current, restore)
                            if h.direction == "down" and not runner.is_reversible(h.revision)]

                blocked = await migrations.in_worker(irreversible)
                if blocked and force:
                    return await self._skip_downgrade(spec, current, blocked)
                if blocked:
                    why = (f"revision {', '.join(blocked)} of {spec.name} has no working downgrade; the schema "
                           f"stays at {current}. `release revert --force` skips this downgrade")
                    self.run.reports.append(StepReport(spec.name, "database", None, "downgrade", "failed", 1, detail=why))
                    self.run.fail(why)
                    return False
                return await self.migrate(spec, runner, restore, "downgrade")
        return job

    async def _skip_downgrade(self, spec: DatabaseSpec, current: str | None, blocked: list[str]) -> bool:
        """--force: the skip itself is a journaled step, so the journal says why the schema stayed."""
        why = f"--force: schema downgrade skipped; {', '.join(blocked)} has no working downgrade"
        self.run.log.warning("downgrade.skipped", node=spec.name, why=why)

        async def start() -> None:
            return None

        async def finish(_: None) -> StepResult:
            return StepResult(True, detail=why)

        intent = StepIntent(spec.name, "database", "skip", before=current, after=current)
        return await self.run.step(intent, start, finish)

