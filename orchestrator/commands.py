"""The library API: one function per CLI command (as Alembic's command.py), usable from Python.

Thin by design: each function loads what it needs, takes the lock where it changes things, and
hands over to `plan`, `runs` and `lifecycle`. Data flows one way:
manifests -> graph -> plan -> runs (walk, rollout, schema, steps) -> journal.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import networkx as nx

from . import graph as graphs
from . import runs
from .errors import InputError, Interrupted, StepFailed
from .journal import Journal, default_url
from .lifecycle import ReleaseState, decide_apply, nothing_to_revert
from .logs import close_run_log, get_logger, open_run_log
from .manifests import Project, load_project, merge_sources
from .migrations import Rendered, in_worker
from .plan import MIGRATE, Plan, check_migrations, check_release_name, journal_sources, make_plan, runner_for
from .probes import read_live, read_state
from .runs import RunResult
from .secrets import mask_url
from .transports import TransportFactory, make_transports

Confirm = Callable[[Plan], bool]


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


def graph(project_dir: Path | str, fmt: str = "text") -> str | bytes:
    """The graph as text, dot or mermaid (str), or as an svg or png picture (bytes, via Graphviz)."""
    g = graphs.build_graph(load_project(project_dir))
    return graphs.render(g, fmt)


def plan(project_dir: Path | str, name: str, *, journal: str | None = None, force: tuple[str, ...] = (),
         parallelism: int = 16, transports: TransportFactory = make_transports) -> Plan:
    """The dry run: reads the journal, the databases and the hosts' probes; creates nothing."""
    check_release_name(name)
    project, g = load(project_dir)
    j = Journal.open(journal_url(project.root, journal), create=False)
    try:
        live, _ = read_live(project, name, transports, parallelism)
        return make_plan(project, g, j, name, force, live)
    finally:
        if j:
            j.close()


def plan_sql(project_dir: Path | str, name: str, *, journal: str | None = None) -> dict[str, list[Rendered]]:
    """The SQL each migration of the plan would run (Alembic offline mode), per database and per
    revision; a revision that cannot be rendered offline has `error` instead of `sql`."""
    p = plan(project_dir, name, journal=journal)
    out = {}
    for step in p.steps:
        if step.action == MIGRATE:
            out[step.node] = runner_for(p.project, p.project.databases[step.node]).render(step.from_, step.to)
    return out


@contextmanager
def _locked(root: Path, url: str | None, command: str, wait: float) -> Iterator[Journal]:
    j = Journal.open(journal_url(root, url), create=True)
    assert j is not None
    try:
        j.lock.acquire(command, wait=wait)
        try:
            yield j
        finally:
            j.lock.release()
    finally:
        j.close()


def apply(project_dir: Path | str, name: str, *, journal: str | None = None, parallelism: int = 16,
          force: tuple[str, ...] = (), force_release: bool = False, auto_revert: bool = False,
          lock_wait: float = 0.0, transports: TransportFactory = make_transports,
          confirm: Confirm | None = None) -> RunResult:
    """Apply release `name`. Raises StepFailed (1), Interrupted (130), LockHeld (3), InputError (2).

    `confirm(plan)` sees the plan that will run, under the lock, before anything changes; False
    cancels (exit 1, nothing changed)."""
    check_release_name(name)  # before the journal is created: rejected input changes nothing
    project, g = load(project_dir)
    log = get_logger(release=name)
    with _locked(project.root, journal, f"apply {name}", lock_wait) as j:
        p = make_plan(project, g, j, name, force, read_live(project, name, transports, parallelism)[0])
        latest = j.latest()
        decision = decide_apply(latest, name, force_release=force_release)
        drifted = [s.drift for s in p.steps if s.drift and s.node not in force]
        if drifted:
            raise InputError("refusing to migrate databases changed outside `release`", problems=drifted)
        blocked = [s.blocked for s in p.steps if s.blocked]
        if blocked:
            raise InputError("refusing a schema downgrade that cannot run", problems=blocked)
        if confirm is not None and p.changes and not confirm(p):
            raise StepFailed(f"release {name} not applied: cancelled; nothing was changed")
        if decision.over_revert:
            # The hosts reverted so far are deployed again, and a later revert undoes them again.
            assert latest is not None
            j.add_event("resume_over_revert", f"apply {latest.name} resumed over a {latest.revert_state} "
                        "revert (--force-release)", decision.resume_of)
        if not p.changes:
            if decision.resume_of is not None:
                j.set_state(decision.resume_of, ReleaseState.APPLIED, message="nothing left to do",
                            clear_revert=decision.over_revert)
            log.info("release.unchanged", message="nothing to change")
            return RunResult(name, ReleaseState.APPLIED, message=f"release {name}: nothing to change")
        release_id = _open_record(j, p, project, decision.resume_of, decision.over_revert)
        logfile = open_run_log(project.root, name)
        try:
            return asyncio.run(runs.apply(project, p, j, release_id, parallelism, transports, auto_revert,
                                          str(logfile)))
        finally:
            close_run_log()


def _open_record(j: Journal, p: Plan, project: Project, resume_of: int | None, over_revert: bool) -> int:
    # `downgrades`: the databases this release moves down, so that its revert takes them up first.
    if resume_of is None:
        return j.begin_release(p.release, p.previous, {"sources": journal_sources(project.sources),
                                                       "downgrades": p.downgrades})
    # Today's manifests join the first attempt's copy: revert must know the commands and
    # services this attempt runs (a deploy fixed between attempts, a service added).
    before = j.get(resume_of).manifests
    j.claim_release(resume_of, {
        "sources": merge_sources(before.get("sources") or {}, journal_sources(project.sources)),
        "downgrades": sorted(set(before.get("downgrades") or []) | set(p.downgrades))})
    j.set_state(resume_of, ReleaseState.IN_PROGRESS, clear_revert=over_revert)
    return resume_of


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
        done = nothing_to_revert(release)
        if done:
            return RunResult(release.name, ReleaseState.REVERTED, message=done)
        open_run_log(root, release.name)
        try:
            result = asyncio.run(runs.revert(root, j, release, parallelism, transports, force))
        finally:
            close_run_log()
        if result.state == ReleaseState.INTERRUPTED:
            raise Interrupted(result.message, result=result)
        if result.failures:
            raise StepFailed(result.message, problems=result.failures, result=result)
        return result


def status(project_dir: Path | str, *, journal: str | None = None, live: bool = False,
           parallelism: int = 16, transports: TransportFactory = make_transports) -> dict[str, Any]:
    """The latest release record and what is in place now, from the journal alone: it works
    with every host and database down, and with broken manifests (said in `warnings`).
    `live` also asks the hosts' probes and the databases, and reports where they differ."""
    root = Path(project_dir).resolve()
    out: dict[str, Any] = {"release": None, "state": None, "services": {}, "databases": {}}
    warnings: list[str] = []
    project = _project_for_status(root, live, warnings)
    j = Journal.open(journal_url(root, journal), create=False)
    if j is not None:
        try:
            latest = j.latest()
            if latest:
                out["release"], out["state"] = latest.name, latest.state
                if latest.partly_reverted:  # only then: hosts may be half back
                    out["revert_state"] = latest.revert_state
            out["services"] = j.current_versions()
            for name, (rev, doubt) in j.recorded_revisions().items():
                out["databases"][name] = rev
                if doubt:
                    warnings.append(f"{name}: its last migration step did not finish cleanly; "
                                    "`release status --live` reads the database")
        finally:
            j.close()
    for name in project.databases if project else ():
        out["databases"].setdefault(name, None)
    if live and project is not None:
        out.update(read_state(project, out["services"], warnings, parallelism, transports))
    if warnings:
        out["warnings"] = warnings
    return out


def _project_for_status(root: Path, live: bool, warnings: list[str]) -> Project | None:
    try:
        return load_project(root)
    except InputError as exc:
        if live:
            raise
        warnings.append(f"manifests not read ({exc.message}: {'; '.join(exc.problems[:3])}); "
                        "showing the journal only")
        return None


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
        j.lock.unlock(lock_id)
    finally:
        j.close()
