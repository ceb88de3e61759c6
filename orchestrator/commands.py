"""The library API: one function per CLI command (as Alembic's command.py), usable from Python.

Thin by design: each function loads what it needs, takes the lock where it changes things, and
hands over to `plan`, `runs` and `lifecycle`. Data flows one way:
manifests -> graph -> plan -> runs (walk, rollout, schema, steps) -> journal.
"""

from __future__ import annotations

import importlib

import asyncio
import contextlib
import getpass
import os
import socket
import subprocess
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from . import heap, hooks, manifest_schema, reports, runs, saved, settings
from .faults import FaultPoints
from .errors import HostUnreachable, InputError, Interrupted, ReleaseError, StepFailed
from .journal import Journal
from .lifecycle import Phase, ReleaseState, decide_apply, nothing_to_revert, resumes
from .logs import close_run_log, get_logger, open_run_log
from .manifests import Project, load_project
from .notify import Notifier
from .plan import MIGRATE, Plan, check_migrations, check_release_name, make_plan, runner_for
from .probes import ProbeFailed, read_live
from .runs import RunResult
from .scope import Scope
from .secrets import mask_url
from .secrets import register as register_secrets
from .sources import journal_copy, merge_copies
from .transports import TransportFactory, make_transports
from .writefail import WriteFailed
from .access import journal_url, open_journal, register_settings_secrets
from .queries import history, iso, revert_plan, show, status  # noqa: F401 - re-exported: the read-only commands

if TYPE_CHECKING:
    from .migrations import Rendered

# Not `from . import graph`: the package exports a function of that name, which wins there.
graphs = importlib.import_module(f"{__package__}.graph")

Confirm = Callable[[Plan], bool]


def load(project_dir: Path | str) -> tuple[Project, nx.DiGraph]:
    """Manifests, graph and migrations checked; every problem reported at once (exit 2)."""
    project = load_project(project_dir)
    register_secrets(project.settings.secrets)
    g = graphs.build_graph(project)
    check_migrations(project)
    return project, g


def validate(project_dir: Path | str) -> Project:
    """`load`, but the migration scripts are read, never imported: validating a pull request
    runs none of its code (`plan` and `apply` import them, and so find what only running shows)."""
    project = load_project(project_dir)
    graphs.build_graph(project)
    check_migrations(project, run_code=False)
    return project


def graph(project_dir: Path | str, fmt: str = "text") -> str | bytes:
    """The graph as text, dot or mermaid (str), or as an svg or png picture (bytes, via Graphviz)."""
    g = graphs.build_graph(load_project(project_dir))
    return graphs.render(g, fmt)


def plan(project_dir: Path | str, name: str, *, journal: str | None = None, force: tuple[str, ...] = (),
         scope: Scope = Scope(), parallelism: int = 16, transports: TransportFactory = make_transports,
         out: Path | None = None) -> Plan:
    """The dry run: reads the journal, the databases and the hosts' probes; creates nothing but
    `out`, the plan saved for `apply --plan` with a fingerprint of what it was computed from."""
    check_release_name(name)
    project, g = load(project_dir)
    j = open_journal(project.root, journal, create=False)
    try:
        live, _ = read_live(project, name, transports, parallelism)
        p = make_plan(project, g, j, name, force, live, scope)
        p.close()  # nothing migrates: the connections that read the heads are done
        if out is not None:
            saved.save(out, p, j.latest() if j else None, force)
        return p
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
    j = open_journal(root, url, create=True)
    assert j is not None
    if settings.load(root).project is None and j.project != settings.DEFAULT_PROJECT:
        get_logger().warning("journal.project_unnamed", message=(
            f"the journal {mask_url(j.url)} may be shared by other projects; this one is {j.project!r} "
            "there (after its directory or git repository): set `project:` in services.d/release.yaml so that every "
            "checkout is the same project"))
    try:
        j.lock.acquire(command, wait=wait)
        try:
            yield j
        except BaseException:
            # A full disk fails the release of the lock too: the first failure is the one to
            # report, and a lock whose process is gone is taken over by the next run.
            with contextlib.suppress(WriteFailed):
                j.lock.release()
            raise
        j.lock.release()
    finally:
        j.close()


@heap.frozen
def apply(project_dir: Path | str, name: str, *, journal: str | None = None, parallelism: int = 16,
          force: tuple[str, ...] = (), force_release: bool = False, auto_revert: bool = False,
          lock_wait: float = 0.0, transports: TransportFactory = make_transports,
          confirm: Confirm | None = None, scope: Scope = Scope(), plan_file: Path | None = None,
          junit: Path | str | None = None, annotate: reports.Annotate | None = None) -> RunResult:
    """Apply release `name`. Raises StepFailed (1), Interrupted (130), LockHeld (3), InputError (2).

    `confirm(plan)` sees the plan that will run, under the lock, before anything changes; False
    cancels (exit 1, nothing changed); so does a failing `pre_apply` hook, run next. `plan_file`:
    run exactly that saved plan (its name, force and scope), or refuse (exit 2) if anything it was
    computed from changed. Webhooks hear `started` and how it ended. `junit` names a JUnit XML
    file to write; under GitHub Actions `annotate` gets each `::error` line (default: stdout) and
    the step summary is appended to $GITHUB_STEP_SUMMARY: for a failed release too."""
    stored = saved.load(plan_file) if plan_file is not None else None
    if stored is not None:
        name, force, scope = stored.release, stored.force, stored.scope
    check_release_name(name)  # before the journal is created: rejected input changes nothing
    project, g = load(project_dir)
    log = get_logger(release=name)
    with _locked(project.root, journal, f"apply {name}", lock_wait) as j, contextlib.ExitStack() as links:
        live = _read_live_or_refuse(j, project, name, transports, parallelism)
        p = make_plan(project, g, j, name, force, live, scope)
        links.callback(p.close)  # each migration closes its database's; any left are closed here
        latest = j.latest()
        if stored is not None:
            saved.check(stored, p, latest, plan_file)
        decision = decide_apply(latest, name, force_release=force_release)
        drifted = [s.drift for s in p.steps if s.drift and s.node not in force]
        if drifted:
            raise InputError("refusing to migrate databases changed outside `release`", problems=drifted)
        blocked = [s.blocked for s in p.steps if s.blocked]
        if blocked:
            raise InputError("refusing a schema downgrade that cannot run", problems=blocked)
        if confirm is not None and p.changes and not confirm(p):
            raise StepFailed(f"release {name} not applied: cancelled; nothing was changed")
        if p.changes:
            hooks.pre_apply(project.root, project.settings.hooks, p)
        for fixed in j.reconcile(live):
            log.warning("drift", message=fixed)
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
            unchanged = RunResult(name, ReleaseState.APPLIED, message=f"release {name}: nothing to change")
            reports.publish(unchanged, Phase.APPLY, junit_file=junit, annotate=annotate)
            return unchanged
        # What can fail before the record is written fails here, leaving no record behind.
        faults = FaultPoints()
        logfile = open_run_log(project.root, name)
        try:
            release_id = _open_record(j, p, project, decision.resume_of, decision.over_revert)
            notifier = Notifier(project.root, project.settings)
            return _run(Phase.APPLY, notifier, runs.apply(project, p, j, release_id, parallelism, transports,
                                                          auto_revert, str(logfile), notifier, faults),
                        junit, annotate)
        finally:
            close_run_log()


def _read_live_or_refuse(j: Journal, project: Project, name: str, transports: TransportFactory,
                         parallelism: int) -> dict[str, dict[str, str | None]]:
    """The hosts' versions; a host that cannot be asked refuses the apply before anything changed,
    recorded as a failed release with no steps (which blocks no later release)."""
    try:
        return read_live(project, name, transports, parallelism)[0]
    except ProbeFailed as exc:
        if not resumes(j.latest(), name):
            release_id = j.begin_release(name, j.last_applied_name(), journal_copy(project))
            j.set_state(release_id, ReleaseState.FAILED, message=str(exc))
        raise HostUnreachable(exc.message, problems=exc.problems) from None


def _run(phase: Phase, notifier: Notifier, run: Coroutine[Any, Any, RunResult], junit: Path | str | None,
         annotate: reports.Annotate | None) -> RunResult:
    """An apply or a revert to its end, with its notifications; its reports written either way."""
    heap.freeze()  # the scripts and the plan, made since the command began, live as long as the run
    try:
        result = asyncio.run(notifier.delivering(run))
    except ReleaseError as exc:
        if isinstance(exc.result, RunResult):
            reports.publish(exc.result, phase, junit_file=junit, annotate=annotate)
        raise
    reports.publish(result, phase, junit_file=junit, annotate=annotate)
    return result


def _open_record(j: Journal, p: Plan, project: Project, resume_of: int | None, over_revert: bool) -> int:
    # `downgrades`: the databases this release moves down, so that its revert takes them up first.
    # `run_by` and `git`: who ran it from which commit of the release repository (for `history`
    # and `show`), kept here rather than in columns of their own; a resumed apply records its own.
    about = {"run_by": _run_by(j.hostname), "git": _git_state(project)}
    copy = journal_copy(project)
    if resume_of is None:
        return j.begin_release(p.release, p.previous, {**copy, "downgrades": p.downgrades,
                                                       "scope": p.scope.to_json(), **about})
    # Today's manifests join the first attempt's copy: revert must know the commands and
    # services this attempt runs (a deploy fixed between attempts, a service added).
    before = j.get(resume_of).manifests
    j.claim_release(resume_of, {
        **merge_copies(before, copy),
        "downgrades": sorted(set(before.get("downgrades") or []) | set(p.downgrades)), **about})
    j.set_state(resume_of, ReleaseState.IN_PROGRESS, clear_revert=over_revert)
    return resume_of


def _run_by(hostname: str | None = None) -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry (some containers)
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{hostname or socket.gethostname()}"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):  # no git here: nothing to record
        return None
    return done.stdout if done.returncode == 0 else None


def _git_state(project: Project) -> dict[str, Any] | None:
    """The release repository's commit, and whether what the release reads (services.d and the
    migration directories) differs from it; None outside a git work tree or before a commit."""
    root = project.root
    if (_git(root, "rev-parse", "--is-inside-work-tree") or "").strip() != "true":
        return None
    commit = (_git(root, "rev-parse", "HEAD") or "").strip()
    if not commit:
        return None
    paths = ["services.d", *sorted({spec.migrations for spec in project.databases.values()})]
    porcelain = _git(root, "status", "--porcelain", "--", *paths)
    # Python's bytecode caches appear beside the revision scripts once Alembic has read them.
    changed = [line for line in (porcelain or "").splitlines() if "__pycache__/" not in line]
    return {"commit": commit, "dirty": bool(changed) if porcelain is not None else None}


@heap.frozen
def revert(project_dir: Path | str, *, journal: str | None = None, parallelism: int = 16,
           force: bool = False, lock_wait: float = 0.0, transports: TransportFactory = make_transports,
           junit: Path | str | None = None, annotate: reports.Annotate | None = None) -> RunResult:
    """Undo the latest release from the journal, dependents first. Already reverted: no-op.
    Notifications and reports as for `apply`."""
    root = Path(project_dir).resolve()
    register_settings_secrets(root)
    url = journal_url(root, journal)
    j = open_journal(root, journal, create=False)
    if j is None:
        raise InputError(f"no release in the journal {mask_url(url)}: nothing to revert")
    j.close()
    with _locked(root, journal, "revert", lock_wait) as j:
        release = j.latest()
        if release is None:
            raise InputError(f"no release in the journal {mask_url(url)}: nothing to revert")
        done = nothing_to_revert(release)
        if done:
            unchanged = RunResult(release.name, ReleaseState.REVERTED, message=done)
            reports.publish(unchanged, Phase.REVERT, junit_file=junit, annotate=annotate)
            return unchanged
        open_run_log(root, release.name)
        notifier = Notifier(root, settings.load(root))
        try:
            result = _run(Phase.REVERT, notifier, runs.revert(root, j, release, parallelism, transports, force,
                                                              notifier), junit, annotate)
        finally:
            close_run_log()
        if result.state == ReleaseState.INTERRUPTED:
            raise Interrupted(result.message, result=result)
        if result.failures:
            raise StepFailed(result.message, problems=result.failures, result=result)
        return result


def schema(kind: str = "all") -> dict[str, Any]:
    """The JSON Schema of the manifests, from the pydantic models that load them."""
    return manifest_schema.build(kind)


def unlock(project_dir: Path | str, lock_id: str, *, journal: str | None = None) -> None:
    root = Path(project_dir).resolve()
    register_settings_secrets(root)
    j = open_journal(root, journal, create=False)
    if j is None:
        raise InputError("there is no journal here, so no lock to remove")
    try:
        j.lock.unlock(lock_id)
    finally:
        j.close()
