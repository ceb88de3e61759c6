"""The library API: one function per CLI command (as Alembic's command.py), usable from Python.

Data flows one way: manifests -> graph -> plan -> executor -> journal.
"""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import networkx as nx

from . import graph as graphs
from .errors import HostUnreachable, InputError, Interrupted, StepFailed
from .executor import APPLY, REVERT, Executor, StepReport, changes_to_revert
from .faults import FaultPoints
from .journal import APPLIED, FAILED, IN_PROGRESS, INTERRUPTED, REVERTED, Journal, Release, default_url
from .logs import attach_view, close_run_log, get_logger, log_format, open_run_log
from .manifests import Project, load_project, merge_sources
from .migrations import in_worker
from .plan import (MIGRATE, Plan, check_migrations, check_release_name, journal_sources, journaled_project,
                   make_plan, runner_for)
from .secrets import mask_url
from .transports import Transport, TransportFactory, make_transports
from .view import LiveView
from .view import wanted as view_wanted

HEARTBEAT_EVERY = 10.0


@dataclass
class RunResult:
    release: str
    state: str
    steps: list[StepReport] = field(default_factory=list)
    message: str = ""
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "state": self.state, "steps": [s.to_json() for s in self.steps]}


def journal_url(project_dir: Path, url: str | None) -> str:
    return url or os.environ.get("RELEASE_JOURNAL") or default_url(Path(project_dir).resolve())


def load(project_dir: Path | str) -> tuple[Project, nx.DiGraph]:
    """Manifests, graph and migrations checked; every problem reported at once (exit 2)."""
    project = load_project(project_dir)
    g = graphs.build_graph(project)
    check_migrations(project)
    return project, g


def validate(project_dir: Path | str) -> Project:
    return load(project_dir)[0]


def graph(project_dir: Path | str, fmt: str = "text") -> str:
    project = load_project(project_dir)
    g = graphs.build_graph(project)
    renderers = {"text": graphs.to_text, "dot": graphs.to_dot, "mermaid": graphs.to_mermaid}
    if fmt not in renderers:
        raise InputError(f"unknown graph format {fmt!r}")
    return renderers[fmt](g)


def plan(project_dir: Path | str, name: str, *, journal: str | None = None,
         force: tuple[str, ...] = ()) -> Plan:
    """The dry run: reads the journal and the databases, creates nothing."""
    project, g = load(project_dir)
    j = Journal.open(journal_url(project.root, journal), create=False)
    try:
        return make_plan(project, g, j, name, force)
    finally:
        if j:
            j.close()


def plan_sql(project_dir: Path | str, name: str, *, journal: str | None = None) -> dict[str, str]:
    """The SQL each migration of the plan would run (Alembic offline mode), per database."""
    p = plan(project_dir, name, journal=journal)
    out = {}
    for step in p.steps:
        if step.action == MIGRATE:
            out[step.node] = runner_for(p.project, p.project.databases[step.node]).offline_sql(step.from_, step.to)
    return out


@contextmanager
def _locked(root: Path, url: str | None, command: str, wait: float) -> Iterator[Journal]:
    j = Journal.open(journal_url(root, url), create=True)
    assert j is not None
    try:
        j.acquire_lock(command, wait=wait)
        try:
            yield j
        finally:
            j.release_lock()
    finally:
        j.close()


async def _preflight(transports: dict[str, Transport]) -> None:
    """Connect to every host before the first change: one that fails refuses the whole run."""
    results = await asyncio.gather(*(t.connect() for t in transports.values()), return_exceptions=True)
    bad = [f"{name}: {r}" for name, r in zip(transports, results) if isinstance(r, BaseException)]
    if bad:
        raise HostUnreachable("cannot reach every host; nothing was changed", problems=bad)


async def _close(transports: dict[str, Transport]) -> None:
    """Close every transport, those that tunnel through a jump host before the jump host: a
    kill still under way on a host behind it needs the tunnel until it is done."""
    def depth(t: Transport) -> int:
        n, hop = 0, getattr(t, "jump", None)
        while hop is not None and n <= len(transports):
            n, hop = n + 1, getattr(hop, "jump", None)
        return n

    levels: dict[int, list[Transport]] = {}
    for t in transports.values():
        levels.setdefault(depth(t), []).append(t)
    for level in sorted(levels, reverse=True):
        await asyncio.gather(*(t.close() for t in levels[level]), return_exceptions=True)


async def _drive(ex: Executor, jobs: dict[str, Any], journal: Journal) -> bool:
    """Run the walk with signal handling (SPEC §5) and the lock's heartbeat."""
    loop = asyncio.get_running_loop()
    hits = 0

    def on_signal(signame: str) -> None:
        nonlocal hits
        hits += 1
        if hits == 1:
            ex.log.warning("interrupt", signal=signame,
                           message="no new steps start; running commands finish (again to kill them)")
            ex.stop.set()
        else:
            ex.log.warning("interrupt.kill", signal=signame, message="killing running commands")
            ex.killed = True
            for t in ex.transports.values():
                t.kill_running()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass

    async def beat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY)
            try:
                ours = await asyncio.to_thread(journal.heartbeat)
            except Exception as exc:  # noqa: BLE001 - a missed beat must not end the heartbeat
                ex.log.warning("lock.heartbeat_failed", error=str(exc))
                continue
            if not ours and not ex.stop.is_set():
                # Someone removed our lock: another run may start, so start nothing more.
                ex.log.error("lock.lost", message="the release lock was removed; no new steps start")
                ex.stop.set()

    beater = asyncio.create_task(beat())
    try:
        if not view_wanted(log_format()):
            return await ex.walk(jobs)
        title = f"release {ex.release}: {ex.phase}"
        with LiveView(ex.graph, set(jobs), ex.phase == REVERT, title) as view:
            attach_view(view)
            try:
                return await ex.walk(jobs)
            finally:
                attach_view(None)
    finally:
        beater.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)


def apply(project_dir: Path | str, name: str, *, journal: str | None = None, parallelism: int = 16,
          force: tuple[str, ...] = (), force_release: bool = False, auto_revert: bool = False,
          lock_wait: float = 0.0, transports: TransportFactory = make_transports) -> RunResult:
    """Apply release `name`. Raises StepFailed (1), Interrupted (130), LockHeld (3), InputError (2)."""
    check_release_name(name)  # before the journal is created: rejected input changes nothing
    project, g = load(project_dir)
    log = get_logger(release=name)
    with _locked(project.root, journal, f"apply {name}", lock_wait) as j:
        p = make_plan(project, g, j, name, force)
        latest = j.latest()
        # Applying over a revert that did not finish would leave that release half undone for
        # good: the next `release revert` undoes the new apply, and the half-reverted release is
        # no longer the latest (a resume of it would even count the hosts reverted before it as
        # reverted still).
        if latest and latest.partly_reverted and not force_release:
            raise InputError(f"release {latest.name} is partly reverted (revert {latest.revert_state}): "
                             "run `release revert` to finish it first (--force-release to go on anyway)")
        if (latest and p.resume_of is None and latest.state in (FAILED, INTERRUPTED, IN_PROGRESS)
                and not force_release):
            raise InputError(f"release {latest.name} is {latest.state}: run `release revert` first, "
                             f"or `release apply {latest.name}` to continue it (--force-release to go on anyway)")
        drifted = [s.drift for s in p.steps if s.drift and s.node not in force]
        if drifted:
            raise InputError("refusing to migrate databases changed outside `release`", problems=drifted)
        if not p.changes:
            if p.resume_of is not None:
                j.set_state(p.resume_of, APPLIED, message="nothing left to do",
                            clear_revert=_resumed_over_revert(j, latest, p.resume_of))
            log.info("release.unchanged", message="nothing to change")
            return RunResult(name, APPLIED, message=f"release {name}: nothing to change")
        if p.resume_of is not None:
            # Today's manifests join the first attempt's copy: revert must know the commands and
            # services this attempt runs (a deploy fixed between attempts, a service added).
            release_id = p.resume_of
            before = j.get(release_id).manifests.get("sources") or {}
            j.claim_release(release_id, {"sources": merge_sources(before, journal_sources(project.sources))})
            j.set_state(release_id, IN_PROGRESS, clear_revert=_resumed_over_revert(j, latest, release_id))
        else:
            release_id = j.begin_release(name, p.previous, {"sources": journal_sources(project.sources)})
        logfile = open_run_log(project.root, name)
        try:
            return asyncio.run(_apply(project, g, p, j, release_id, parallelism, transports, auto_revert,
                                      str(logfile)))
        finally:
            close_run_log()


def _resumed_over_revert(j: Journal, latest: Release | None, release_id: int) -> bool:
    """Journal that an apply continues a half-reverted release (--force-release): the hosts
    reverted so far are deployed again, and a later revert undoes them again."""
    if latest is None or not latest.partly_reverted:
        return False
    j.add_event("resume_over_revert", f"apply {latest.name} resumed over a {latest.revert_state} revert "
                "(--force-release)", release_id)
    return True


async def _apply(project: Project, g: nx.DiGraph, p: Plan, j: Journal, release_id: int, parallelism: int,
                 factory: TransportFactory, auto_revert: bool, logfile: str) -> RunResult:
    hosts = sorted({h for s in p.changes for h in s.targets})
    transports = factory(project, hosts)
    ex = Executor(g, project, j, release_id, p.release, APPLY, transports, parallelism, FaultPoints())
    ex.log.info("release.start", resume=p.resume_of is not None, logfile=logfile)
    try:
        try:
            await _preflight(transports)
        except HostUnreachable as exc:
            j.set_state(release_id, FAILED, message=str(exc))
            raise
        jobs = {}
        for step in p.changes:
            spec = project.nodes[step.node]
            if step.kind == "service":
                jobs[step.node] = ex.deploy_job(spec, step.targets, step.to, step.current)
            else:
                jobs[step.node] = ex.migrate_job(spec, step.to)
        ok = await _drive(ex, jobs, j)
    finally:
        await _close(transports)
    if ok:
        j.set_state(release_id, APPLIED)
        ex.log.info("release.applied")
        return RunResult(p.release, APPLIED, ex.reports, f"release {p.release} applied")
    if ex.stop.is_set() and not ex.failures:
        j.set_state(release_id, INTERRUPTED, message="interrupted")
        ex.log.warning("release.interrupted")
        raise Interrupted(f"release {p.release} interrupted; `release revert` undoes what was done, "
                          f"`release apply {p.release}` continues it",
                          result=RunResult(p.release, INTERRUPTED, ex.reports))
    message = f"release {p.release} failed"
    j.set_state(release_id, FAILED, message="; ".join(ex.failures))
    ex.log.error("release.failed", failures=ex.failures)
    if auto_revert:
        ex.log.warning("release.auto_revert")
        reverted = await _revert(project.root, j, j.get(release_id), parallelism, factory, False)
        message += f"; auto-revert: {reverted.message}"
        raise StepFailed(message, problems=ex.failures + [reverted.message],
                         result=RunResult(p.release, FAILED, ex.reports + reverted.steps))
    raise StepFailed(message + "; run `release revert` to undo it", problems=ex.failures,
                     result=RunResult(p.release, FAILED, ex.reports))


def revert(project_dir: Path | str, *, journal: str | None = None, parallelism: int = 16,
           force: bool = False, lock_wait: float = 0.0,
           transports: TransportFactory = make_transports) -> RunResult:
    """Undo the latest release from the journal, dependents first. Already reverted: no-op."""
    root = Path(project_dir).resolve()
    url = journal_url(root, journal)
    j = Journal.open(url, create=False)
    if j is None:
        raise InputError(f"no release in the journal {mask_url(url)}: nothing to revert")
    j.close()
    with _locked(root, journal, "revert", lock_wait) as j:
        release = j.latest()
        if release is None:
            raise InputError(f"no release in the journal {mask_url(url)}: nothing to revert")
        if release.state == REVERTED:
            return RunResult(release.name, REVERTED, message=f"release {release.name} is already reverted")
        open_run_log(root, release.name)
        try:
            result = asyncio.run(_revert(root, j, release, parallelism, transports, force))
        finally:
            close_run_log()
        if result.state == INTERRUPTED:
            raise Interrupted(result.message, result=result)
        if result.failures:
            raise StepFailed(result.message, problems=result.failures, result=result)
        return result


async def _revert(root: Path, j: Journal, release: Any, parallelism: int, factory: TransportFactory,
                  force: bool) -> RunResult:
    # The manifests journaled with the release, not today's checkout: a `git revert` of the
    # release repository must not change what undoing the release means.
    project = journaled_project(root, release.manifests.get("sources"))
    g = graphs.build_graph(project)
    services, databases = changes_to_revert(j.steps(release.id, APPLY), j.steps(release.id, REVERT))
    missing = sorted(n for n in [*services, *databases] if n not in project.nodes)
    if missing:
        raise StepFailed(f"release {release.name}: the journal's copy of the manifests has no "
                           f"{', '.join(missing)}, which the release changed; revert cannot know how to undo it")
    hosts = sorted({c.host for changes in services.values() for c in changes})
    transports = factory(project, hosts)
    ex = Executor(g, project, j, release.id, release.name, REVERT, transports, parallelism, FaultPoints())
    ex.log.info("revert.start", services=len(services), databases=len(databases))
    try:
        try:
            await _preflight(transports)
        except HostUnreachable:
            raise  # nothing was reverted: the release is left as it was
        jobs = {n: ex.revert_job(project.services[n], changes) for n, changes in services.items()}
        jobs.update({n: ex.downgrade_job(project.databases[n], restore, force) for n, restore in databases.items()})
        # Marked only now, when the first revert step may run: a refused revert changed nothing.
        j.claim_release(release.id)
        j.set_state(release.id, revert_state=IN_PROGRESS)
        ok = await _drive(ex, jobs, j)
    finally:
        await _close(transports)
    if ok:
        j.set_state(release.id, REVERTED, revert_state="done")
        ex.log.info("revert.done")
        return RunResult(release.name, REVERTED, ex.reports, f"release {release.name} reverted")
    if ex.stop.is_set() and not ex.failures:
        j.set_state(release.id, revert_state=INTERRUPTED)
        return RunResult(release.name, INTERRUPTED, ex.reports,
                         f"revert of {release.name} interrupted; run `release revert` again to finish it")
    j.set_state(release.id, revert_state=FAILED, message="; ".join(ex.failures))
    return RunResult(release.name, release.state, ex.reports,
                     f"revert of {release.name} could not finish; fix the cause and run `release revert` again",
                     ex.failures)


def status(project_dir: Path | str, *, journal: str | None = None) -> dict[str, Any]:
    """SPEC §4: the latest release record, and what is in place now (databases read live)."""
    project = load_project(project_dir)
    j = Journal.open(journal_url(project.root, journal), create=False)
    out: dict[str, Any] = {"release": None, "state": None, "services": {}, "databases": {}}
    if j is not None:
        try:
            latest = j.latest()
            if latest:
                out["release"], out["state"] = latest.name, latest.state
                if latest.partly_reverted:  # only then: hosts may be half back
                    out["revert_state"] = latest.revert_state
            out["services"] = j.current_versions()
        finally:
            j.close()
    for name, spec in project.databases.items():
        heads = asyncio.run(in_worker(runner_for(project, spec).current_heads))
        out["databases"][name] = ",".join(heads) or None  # several heads: "a,b", as Alembic writes them
    return out


def history(project_dir: Path | str, *, journal: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    root = Path(project_dir).resolve()
    j = Journal.open(journal_url(root, journal), create=False)
    if j is None:
        return []
    try:
        return [{"release": r.name, "state": r.state, "revert_state": r.revert_state, "previous": r.previous,
                 "started_at": r.started_at, "finished_at": r.finished_at, "message": r.message}
                for r in j.releases(limit)]
    finally:
        j.close()


def unlock(project_dir: Path | str, lock_id: str, *, journal: str | None = None) -> None:
    root = Path(project_dir).resolve()
    j = Journal.open(journal_url(root, journal), create=False)
    if j is None:
        raise InputError("there is no journal here, so no lock to remove")
    try:
        j.unlock(lock_id)
    finally:
        j.close()
