"""An apply or a revert, from a decided plan to the release's final state in the journal.

The lifecycle decides (`lifecycle`), the walk orders (`walk`), the rollout and the schema steps
change things (`rollout`, `schema`), every change goes through the journaled step (`steps`).
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import networkx as nx

from .errors import HostUnreachable, Interrupted, StepFailed
from .faults import FaultPoints
from .journal import Journal, Step
from .lifecycle import Outcome, Phase, Release, ReleaseState, RevertState, revert_outcome, run_outcome
from .manifests import Project
from .plan import Plan
from .rollout import HostChange, Job, Rollout
from .schema import Schema
from .sources import journaled_project
from .steps import Run, StepReport
from .supervise import supervise
from .transports import TransportFactory
from .transports.pool import TransportPool
from .walk import walk
from .writefail import StopOnWriteFailure, WriteFailed, listening

# Not `from . import graph`: the package exports a function of that name, which wins there.
graphs = importlib.import_module(f"{__package__}.graph")


@dataclass
class RunResult:
    release: str
    state: str
    steps: list[StepReport] = field(default_factory=list)
    message: str = ""
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "state": self.state, "steps": [s.to_json() for s in self.steps]}


class Events(Protocol):
    """Told when a run starts and how it ended (`notify.Notifier`: webhooks and hooks); never
    raises, and changes nothing about the run."""

    async def __call__(self, event: str, result: RunResult, phase: str) -> None: ...


async def no_events(event: str, result: RunResult, phase: str) -> None:
    return None


async def execute(run: Run, g: nx.DiGraph, jobs: dict[str, Job], pool: TransportPool) -> bool:
    """Walk the graph (reversed for a revert) running each node's job; nodes without one pass."""
    kinds = {n: g.nodes[n]["kind"] for n in g}

    async def visit(node: str) -> bool:
        job = jobs.get(node)
        if job is None:
            return True
        if run.stopping:
            run.blocked(node, kinds[node], "release stopping")
            return False
        return await job()

    def on_blocked(node: str, failed: list[str]) -> None:
        if node in jobs:
            run.blocked(node, kinds[node], f"waits on {', '.join(failed)}")

    def on_crash(node: str, exc: BaseException) -> None:
        if isinstance(exc, WriteFailed):  # the journal could not be written: no bug, no traceback
            stopper.halt(exc)
            return
        run.fail(f"{node}: {exc}")
        run.log.exception("node.crashed", node=node)

    async def go() -> bool:
        ok = await walk(g, visit, reverse=run.phase == Phase.REVERT, on_blocked=on_blocked, on_crash=on_crash)
        return all(ok.values()) and run.succeeded

    stopper = StopOnWriteFailure(run.stop, run.log)
    with listening(stopper):
        try:
            ok = await supervise(run, g, set(jobs), pool, go)
        finally:
            # A database walk flushes what it held; this also covers a walk cut short.
            try:
                await run.writer.flush()
            finally:
                await run.writer.close()
    if stopper.cause is not None:
        raise stopper.cause
    return ok


def _stopped_by(j: Journal, release_id: int, exc: WriteFailed, run: Run, **state: Any) -> WriteFailed:
    """The run stopped at a failed write: record why if the journal still takes it (else the
    record reads `interrupted` once this process is gone), and say what to do next."""
    with contextlib.suppress(WriteFailed):
        j.set_state(release_id, message=exc.message, **state)
    return WriteFailed(f"{exc.message}; no step started after it: make room, then `release revert` or "
                       f"`release apply {run.release}`"
                       if run.phase == Phase.APPLY else
                       f"{exc.message}; the revert stopped there: make room, then run `release revert` again",
                       result=RunResult(run.release, ReleaseState.INTERRUPTED, run.reports))


async def apply(project: Project, p: Plan, j: Journal, release_id: int, parallelism: int,
                factory: TransportFactory, auto_revert: bool, logfile: str, events: Events = no_events,
                faults: FaultPoints | None = None) -> RunResult:
    run = Run(j, release_id, p.release, Phase.APPLY, parallelism, faults or FaultPoints())
    run.log.info("release.start", resume=p.resume_of is not None, logfile=logfile)
    await events("started", RunResult(p.release, ReleaseState.IN_PROGRESS, message=f"release {p.release} started"),
                 Phase.APPLY)
    hosts = sorted({h for s in p.changes for h in s.targets})
    async with factory(project, hosts) as pool:
        try:
            await pool.preflight()
        except HostUnreachable as exc:
            j.set_state(release_id, ReleaseState.FAILED, message=str(exc))
            await events("failed", RunResult(p.release, ReleaseState.FAILED, message=exc.message,
                                             failures=[str(exc)]), Phase.APPLY)
            raise
        rollout, schema = Rollout(run, project, pool), Schema(run, project)
        jobs = {s.node: (rollout.deploy_job(project.services[s.node], s.targets, s.to, s.current)
                         if s.kind == "service" else schema.migrate_job(project.databases[s.node], s.to, s.runner))
                for s in p.changes}
        try:
            ok = await execute(run, p.graph, jobs, pool)
        except WriteFailed as exc:
            raise _stopped_by(j, release_id, exc, run, state=ReleaseState.FAILED) from None
    state = run_outcome(ok=ok, stopped=run.stop.is_set(), failed=bool(run.failures))
    if state == ReleaseState.APPLIED:
        j.set_state(release_id, state)
        run.log.info("release.applied")
        result = RunResult(p.release, state, run.reports, f"release {p.release} applied")
        await events("applied", result, Phase.APPLY)
        return result
    if state == ReleaseState.INTERRUPTED:
        j.set_state(release_id, state, message="interrupted")
        run.log.warning("release.interrupted")
        result = RunResult(p.release, state, run.reports, f"release {p.release} interrupted")
        await events("interrupted", result, Phase.APPLY)
        raise Interrupted(f"release {p.release} interrupted; `release revert` undoes what was done, "
                          f"`release apply {p.release}` continues it", result=result)
    message = f"release {p.release} failed"
    j.set_state(release_id, state, message="; ".join(run.failures))
    run.log.error("release.failed", failures=run.failures)
    failed = RunResult(p.release, state, list(run.reports), message, list(run.failures))
    await events("failed", failed, Phase.APPLY)
    if auto_revert:
        run.log.warning("release.auto_revert")
        reverted = await revert(project.root, j, j.get(release_id), parallelism, factory, False, events)
        message += f"; auto-revert: {reverted.message}"
        raise StepFailed(message, problems=run.failures + [reverted.message],
                         result=RunResult(p.release, state, run.reports + reverted.steps))
    raise StepFailed(message + "; run `release revert` to undo it", problems=run.failures, result=failed)


async def revert(root: Path, j: Journal, release: Release, parallelism: int, factory: TransportFactory,
                 force: bool, events: Events = no_events) -> RunResult:
    # The manifests journaled with the release, not today's checkout: a `git revert` of the
    # release repository must not change what undoing the release means.
    services, databases = changes_to_revert(j.steps(release.id, Phase.APPLY), j.steps(release.id, Phase.REVERT))
    project = journaled_project(root, release.manifests, databases)
    missing = sorted(n for n in [*services, *databases] if n not in project.nodes)
    if missing:
        raise StepFailed(f"release {release.name}: the journal's copy of the manifests has no "
                         f"{', '.join(missing)}, which the release changed; revert cannot know how to undo it")
    # Reversed below: a database the release moved down goes back up before its dependents.
    g = graphs.with_downgrades(graphs.build_graph(project), set(release.manifests.get("downgrades") or []),
                               {*services, *databases})
    hosts = sorted({c.host for changes in services.values() for c in changes})
    run = Run(j, release.id, release.name, Phase.REVERT, parallelism, FaultPoints())
    run.log.info("revert.start", services=len(services), databases=len(databases))
    async with factory(project, hosts) as pool:
        await pool.preflight()  # unreachable: nothing was reverted, the release is left as it was
        rollout, schema = Rollout(run, project, pool), Schema(run, project)
        jobs = {n: rollout.revert_job(project.services[n], changes) for n, changes in services.items()}
        jobs.update({n: schema.downgrade_job(project.databases[n], restore, force)
                     for n, restore in databases.items()})
        # Marked only now, when the first revert step may run: a refused revert changed nothing.
        j.claim_release(release.id)
        j.set_state(release.id, revert_state=RevertState.IN_PROGRESS)
        try:
            ok = await execute(run, g, jobs, pool)
        except WriteFailed as exc:
            raise _stopped_by(j, release.id, exc, run, revert_state=RevertState.FAILED) from None
    outcome = revert_outcome(ok=ok, stopped=run.stop.is_set(), failed=bool(run.failures))
    if outcome == RevertState.DONE:
        j.set_state(release.id, ReleaseState.REVERTED, revert_state=outcome)
        run.log.info("revert.done")
        result = RunResult(release.name, ReleaseState.REVERTED, run.reports, f"release {release.name} reverted")
        await events("reverted", result, Phase.REVERT)
        return result
    if outcome == RevertState.INTERRUPTED:
        j.set_state(release.id, revert_state=outcome)
        result = RunResult(release.name, ReleaseState.INTERRUPTED, run.reports,
                           f"revert of {release.name} interrupted; run `release revert` again to finish it")
        await events("interrupted", result, Phase.REVERT)
        return result
    j.set_state(release.id, revert_state=outcome, message="; ".join(run.failures))
    result = RunResult(release.name, release.state, run.reports,
                       f"revert of {release.name} could not finish; fix the cause and run `release revert` again",
                       run.failures)
    await events("revert_failed", result, Phase.REVERT)
    return result


def changes_to_revert(apply_steps: list[Step], revert_steps: list[Step]) -> tuple[
        dict[str, list[HostChange]], dict[str, str | None]]:
    """From a release's journal: what each host and database must get back.

    Every apply step counts, done, failed or in doubt (intent without outcome): it may have
    changed something. The first step of a pair keeps the version from before the release,
    even when the apply was resumed. Host reverts that already succeeded are not run again,
    unless the host was changed again after them (an apply resumed over a partial revert);
    databases are always probed (their actual heads decide what is left to downgrade).
    """
    reverted: dict[tuple[str, str | None], int] = {}
    for s in revert_steps:
        if s.kind == "service" and s.status == Outcome.OK:
            reverted[(s.node, s.host)] = max(s.id, reverted.get((s.node, s.host), 0))
    services: dict[str, dict[str, HostChange]] = {}
    databases: dict[str, str | None] = {}
    for s in apply_steps:
        if s.status == Outcome.SKIPPED:  # journaled, never started: nothing to undo
            continue
        if s.kind == "service":
            if s.id < reverted.get((s.node, s.host), 0):
                continue
            hosts = services.setdefault(s.node, {})
            if s.host in hosts:
                hosts[s.host].remove = s.after
            else:
                hosts[s.host] = HostChange(s.node, s.host, s.before, s.after)
        elif s.node not in databases:
            databases[s.node] = s.before
    return {n: list(h.values()) for n, h in services.items()}, databases

