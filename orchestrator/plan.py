"""The plan: desired state (release name, migration targets) against what is in place now."""

from __future__ import annotations

import functools
import importlib
import textwrap
from collections.abc import Callable

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from .errors import InputError, ReleaseError
from .journal import Journal
from .lifecycle import UNFINISHED, Release, ReleaseState, plan_notes, resumes
from .manifests import NAME_RE, DatabaseSpec, Project, ServiceSpec
from . import migrations
from .migrations import RiskScan, static
from .scope import EXCLUDED, Scope, narrow
from .secrets import has_masked_password
from .sources import MISSING_PASSWORD

if TYPE_CHECKING:
    from .migrations import MigrationRunner

# Not `from . import graph`: the package exports a function of that name, which wins there.
graphs = importlib.import_module(f"{__package__}.graph")

DEPLOY, MIGRATE, UNCHANGED = "deploy", "migrate", "unchanged"


@dataclass(frozen=True)
class PlanWarning:
    """One warning of a plan step, with the revision (and its file) it comes from, if any.

    kind: irreversible | drop-table | drop-column | not-null | alter-type | add-not-null |
    create-index | not-rendered (a revision's risks could not be checked) | drift | blocked |
    in-doubt | note.
    """

    kind: str
    message: str
    revision: str | None = None
    file: str | None = None

    @classmethod
    def of(cls, warning: PlanWarning | str, kind: str | None = None) -> PlanWarning:
        if isinstance(warning, PlanWarning):
            return warning
        guess = "drift" if warning.startswith("drift") else "in-doubt" if warning.startswith("in doubt") else "note"
        return cls(kind or guess, warning)

    def __str__(self) -> str:
        return f"{self.revision} ({self.file}): {self.message}" if self.revision else self.message

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "kind": self.kind, "message": self.message}


@dataclass
class PlanStep:
    node: str
    kind: str
    action: str
    from_: str | None
    to: str | None
    hosts: list[str] = field(default_factory=list)  # services: every host of the service
    current: dict[str, str | None] = field(default_factory=dict)  # services: version per host
    targets: list[str] = field(default_factory=list)  # services: the hosts that will change
    revisions: list[str] = field(default_factory=list)  # databases: in the order they are applied
    # Databases: why each revision it applies cannot be undone, read from the revision files when
    # first asked (`reversible`, the warnings); an apply that shows no plan does not parse them.
    irreversible: Callable[[], dict[str, str]] = field(default=dict, repr=False, compare=False)
    direction: str | None = None  # migrate steps: "up", or "down" when it undoes revisions
    warnings: list[PlanWarning | str] = field(default_factory=list)
    drift: str | None = None  # databases: changed outside the tool since the journal saw them
    blocked: str | None = None  # databases: a downgrade that cannot run (apply refuses it)
    # Databases: the risk checks, run when the warnings are first shown. They render every
    # revision offline, which an apply that shows no plan (-y, no terminal) does not need.
    checks: Callable[[], list[PlanWarning | str]] | None = field(default=None, repr=False)
    # Databases to migrate: the runner whose connection read the heads, for the migration to go
    # on with (one engine and connection per database per run); `Plan.close` ends it.
    runner: MigrationRunner | None = field(default=None, repr=False, compare=False)

    @property
    def reversible(self) -> bool:
        return not self.irreversible()

    def all_warnings(self) -> list[PlanWarning]:
        """Every warning as an object: the step's own, then drift and a blocked downgrade."""
        if self.checks is not None:
            checks, self.checks = self.checks, None
            self.warnings += checks()
        out = [PlanWarning.of(w) for w in self.warnings]
        out += [PlanWarning.of(w, kind) for w, kind in ((self.drift, "drift"), (self.blocked, "blocked")) if w]
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "kind": self.kind, "action": self.action,
                               "from": self.from_, "to": self.to}
        if self.kind == "service":
            out["hosts"] = self.hosts
            out["current"] = self.current
        else:
            out["revisions"] = self.revisions
            out["reversible"] = self.reversible
            if self.action == MIGRATE:
                out["direction"] = self.direction
        warnings = self.all_warnings()
        if warnings:
            out["warnings"] = [w.to_json() for w in warnings]
        return out


@dataclass
class Plan:
    release: str
    previous: str | None
    waves: list[list[str]]
    steps: list[PlanStep]
    graph: nx.DiGraph
    project: Project
    resume_of: int | None = None  # the release record an apply of this plan continues
    notes: list[str] = field(default_factory=list)
    scope: Scope = field(default_factory=Scope)

    @property
    def downgrades(self) -> list[str]:
        return [s.node for s in self.steps if s.action == MIGRATE and s.direction == "down"]

    @property
    def changes(self) -> list[PlanStep]:
        return [s for s in self.steps if s.action not in (UNCHANGED, EXCLUDED)]

    def step(self, node: str) -> PlanStep:
        return next(s for s in self.steps if s.node == node)

    def close(self) -> None:
        """The databases' connections closed (a migration that ran has closed its own already)."""
        for s in self.steps:
            if s.runner is not None:
                s.runner.close(if_idle=True)

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "previous": self.previous, "waves": self.waves,
                "steps": [s.to_json() for s in self.steps]}


def check_release_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InputError(f"release name {name!r} does not match {NAME_RE.pattern}")
    return name


def runner_for(project: Project, spec: DatabaseSpec, script_location: Path | None = None) -> MigrationRunner:
    if has_masked_password(spec.url):  # a revert's copy of the manifests, never run as it stands
        raise InputError(f"database {spec.name}: {MISSING_PASSWORD}")
    url = migrations.resolve_url(spec.url, project.root, node=spec.name)
    scripts = project.root / spec.migrations
    shown = spec.migrations if script_location is None else f"the journal's copy of {spec.migrations}"
    # A helper directory inside the script directory is taken from the same copy as the scripts.
    paths = [project.root / p for p in spec.python_path]
    if script_location is not None:
        paths = [Path(script_location) / p.relative_to(scripts) if p.is_relative_to(scripts) else p
                 for p in paths]
    return migrations.MigrationRunner(spec.name, url, script_location or scripts, spec.timeout, shown=shown,
                           python_path=paths)


def check_migrations(project: Project, *, run_code: bool = True) -> None:
    """Every database's script directory and target revision, all problems at once.

    With `run_code` False the revision files are parsed, never imported: their top-level code
    does not run (`validate`, which may be given an untrusted pull request)."""
    problems = []
    for name, spec in project.databases.items():
        try:
            runner = runner_for(project, spec)
            if run_code:
                runner.check_scripts(spec.target)
            found = [] if run_code else static.script_problems(name, runner.script_location, spec.target)
        except ReleaseError as exc:
            found = [str(exc)]
        problems += [f"{project.files[name]}: migrations: {p}" for p in found]
    if problems:
        raise InputError("invalid migrations", problems=problems)


def _service_step(project: Project, spec: ServiceSpec, name: str, current: dict[str, dict[str, str]],
                  forced: bool, in_doubt: set[tuple[str, str]],
                  live: dict[str, str | None] | None) -> PlanStep:
    hosts = project.hosts_of(spec)
    want = spec.version or name
    journaled = {h: current.get(spec.name, {}).get(h) for h in hosts}
    # What the host reports wins over what this journal remembers: it may be another checkout's
    # journal, or the host may have been changed by hand.
    now = {h: live.get(h) for h in hosts} if live is not None else journaled
    distinct = set(now.values())
    from_ = next(iter(distinct)) if len(distinct) == 1 else None
    # Without a probe a host whose last step is in doubt has no known state; deploys are
    # idempotent, so it is simply deployed again. With one, the host says where it is.
    doubt = [h for h in hosts if (spec.name, h) in in_doubt] if live is None else []
    targets = [h for h in hosts if forced or now[h] != want or h in doubt]
    step = PlanStep(spec.name, "service", DEPLOY if targets else UNCHANGED, from_, want,
                    hosts=hosts, current=now, targets=targets)
    if live is not None:
        step.warnings += [f"drift: journal says {journaled[h] or 'nothing'}, {h} reports {now[h] or 'nothing'}"
                          for h in hosts if now[h] != journaled[h]]
    if doubt:
        step.warnings.append(f"in doubt on {', '.join(doubt)}: the last step there did not finish cleanly "
                             "(crash or failure); deployed again")
    return step


def _database_step(project: Project, spec: DatabaseSpec, expected: set[str | None] | None) -> PlanStep:
    runner = runner_for(project, spec)
    target = runner.resolve_target(spec.target)
    heads = runner.current_heads(keep=True)
    try:
        step = _database_change(project, spec, expected, runner, target, heads)
    except BaseException:
        runner.close()
        raise
    if step.action == MIGRATE:
        step.runner = runner
    else:
        runner.close()
    return step


def _database_change(project: Project, spec: DatabaseSpec, expected: set[str | None] | None,
                     runner: MigrationRunner, target: str | None, heads: tuple[str, ...]) -> PlanStep:
    if len(heads) > 1:
        raise InputError(f"{project.files[spec.name]}: database {spec.name} has several heads in place: {', '.join(heads)}")
    current = heads[0] if heads else None
    drift = None
    if expected is not None and current not in expected:
        want = " or ".join(str(r or "base") for r in sorted(expected, key=str))
        drift = (f"drift: {spec.name} is at {current or 'base'} but the journal expects {want}; "
                 f"it was changed outside `release` (apply refuses unless --force {spec.name})")
    if current == target:
        step = PlanStep(spec.name, "database", UNCHANGED, current, target)
        step.drift = drift
        return step
    hops = runner.hops(current, target)
    step = PlanStep(spec.name, "database", MIGRATE, current, target, revisions=[h.revision for h in hops])
    step.drift = drift
    step.direction = "down" if any(h.direction == "down" for h in hops) else "up"
    undo = {h.revision: w for h in hops if h.direction == "down" and (w := runner.irreversible(h.revision))}
    if undo:
        step.blocked = (f"{spec.name}: cannot go down to {target or 'base'}: " + "; ".join(
            f"revision {runner.scripts.label(r)} has no working downgrade ({w})" for r, w in undo.items()))
    ups = [h.revision for h in hops if h.direction == "up"]
    step.irreversible = functools.cache(lambda: {r: w for r in ups if (w := runner.irreversible(r))})
    step.checks = lambda: _revision_warnings(runner, current, target, step.irreversible())
    return step


def _revision_warnings(runner: MigrationRunner, current: str | None, target: str | None,
                       irreversible: dict[str, str]) -> list[PlanWarning | str]:
    """Each revision's warnings, in the order the revisions run: irreversible, then the risks in
    its own offline SQL. One that cannot be rendered offline (it reads rows, say) is named and
    skipped; it still migrates online, and the revisions after it are still checked."""
    out: list[PlanWarning | str] = []
    scan = RiskScan(runner.dialect)  # one scan: a table created by an earlier revision is fresh
    for r in runner.render(current, target):
        if r.revision in irreversible:
            out.append(PlanWarning("irreversible", "irreversible: `release revert` cannot downgrade it "
                                   f"({irreversible[r.revision]})", r.revision, r.file))
        if r.sql is None:
            out.append(PlanWarning("not-rendered", f"risks not checked: it cannot be rendered offline: {r.error}",
                                   r.revision, r.file))
        else:
            out += [PlanWarning(k.kind, k.message, r.revision, r.file) for k in scan.scan(r.sql)]
    return out


def _revert_pending(latest: Release | None, name: str) -> list[str]:
    """A revert that did not finish blocks every other apply: the plan says so up front."""
    if latest is None or not latest.partly_reverted or resumes(latest, name) or latest.state in UNFINISHED:
        return []
    return [f"the revert of release {latest.name} is {latest.revert_state}: run `release revert` to finish "
            "it; apply refuses until then (--force-release to go on anyway)"]


def make_plan(project: Project, g: nx.DiGraph, journal: Journal | None, name: str,
              force: tuple[str, ...] = (), live: dict[str, dict[str, str | None]] | None = None,
              scope: Scope = Scope()) -> Plan:
    """`live`: what each probed service's hosts report (`probes.read_live`), over the journal."""
    check_release_name(name)
    unknown = [f for f in force if f not in project.nodes]
    if unknown:
        raise InputError(f"--force names unknown node(s): {', '.join(unknown)}")
    current = journal.current_versions() if journal else {}
    expected = journal.expected_revisions() if journal else {}
    latest = journal.latest() if journal else None
    # While an apply or revert runs (plan takes no lock), its steps in flight are not in doubt.
    running = latest is not None and ReleaseState.IN_PROGRESS in (latest.state, latest.revert_state)
    in_doubt = journal.in_doubt_hosts() if journal and not running else set()
    previous = journal.last_applied_name() if journal else None
    resume_of = None
    if resumes(latest, name):
        assert latest is not None
        resume_of, previous = latest.id, latest.previous
    steps: list[PlanStep] = []
    try:
        for node in graphs.order(g):
            spec = project.nodes[node]
            if isinstance(spec, ServiceSpec):
                steps.append(_service_step(project, spec, name, current, node in force, in_doubt,
                                            (live or {}).get(node) if spec.current else None))
            else:
                steps.append(_database_step(project, spec, expected.get(node)))
    except BaseException:
        Plan(name, None, [], steps, g, project).close()  # no plan to close them later
        raise
    steps = narrow(steps, scope, project, g, (UNCHANGED,))
    plan = Plan(release=name, previous=previous, waves=[], steps=steps, graph=g, project=project,
                resume_of=resume_of, notes=plan_notes(latest, name) + _revert_pending(latest, name), scope=scope)
    plan.graph = graphs.with_downgrades(g, set(plan.downgrades), {s.node for s in plan.changes})
    plan.waves = graphs.waves(plan.graph)
    return plan


def _lines(s: PlanStep) -> list[str]:
    if s.action == EXCLUDED:
        where = f" on {', '.join(s.targets)}" if s.kind == "service" else ""
        return [f"    {s.node} -> {s.to or 'base'}{where} (excluded by the scope)"]
    if s.kind == "database":
        return _database_lines(s)
    if s.action == UNCHANGED:
        return [f"    {s.node} {s.to} on {', '.join(s.hosts)} (unchanged)"]
    sign = "+" if all(v is None for v in s.current.values()) else "~"
    frm = s.from_ or ("mixed" if len(set(s.current.values())) > 1 else "none")
    return [f"  {sign} {s.node} {frm} -> {s.to} on {', '.join(s.targets)}"]


def render(plan: Plan) -> str:
    """Human output, in the manner of `terraform plan`."""
    running = any(v is not None for s in plan.steps for v in s.current.values())
    first = " (no earlier release in this journal; versions as the hosts report them)" if running else " (first release)"
    if plan.previous == plan.release:
        first, previous = " (already the applied release)", None
    else:
        previous = plan.previous
    lines = [f"release {plan.release}" + (f" (previous: {previous})" if previous else first)]
    lines += [f"note: {n}" for n in plan.notes]
    by_node: dict[str, list[PlanStep]] = {}
    for step in plan.steps:
        by_node.setdefault(step.node, []).append(step)
    for i, wave in enumerate(plan.waves, 1):
        lines.append(f"wave {i}:")
        for s in (s for node in wave for s in by_node[node]):
            lines += _lines(s)
            lines += [f"      ! {w}" for w in s.all_warnings()]
    deploys = [s for s in plan.changes if s.kind == "service"]
    migrates = [s for s in plan.changes if s.kind == "database"]
    unchanged = sum(s.action == UNCHANGED for s in plan.steps)
    excluded = sum(s.action == EXCLUDED for s in plan.steps)
    left_out = f", {excluded} excluded" if excluded else ""
    if not plan.changes:
        lines.append(f"No changes: everything in scope is already at the release's versions{left_out}.")
    else:
        hosts = sum(len(s.targets) for s in deploys)
        lines.append(f"Plan: {len(migrates)} to migrate, {len(deploys)} to deploy on {hosts} host(s), "
                     f"{unchanged} unchanged{left_out}.")
    return "\n".join(lines)


def _database_lines(s: PlanStep) -> list[str]:
    """A database step: its move on one line, and a long list of revisions wrapped below it."""
    if s.action == UNCHANGED:
        return [f"    {s.node} at {s.to or 'base'} (unchanged)"]
    revs = ", ".join(s.revisions)
    short = len(s.revisions) <= 4
    count = f"{len(s.revisions)} revisions"
    if s.direction == "down":
        head = (f"  - {s.node} downgrade {s.from_ or 'base'} -> {s.to or 'base'}, undoing "
                f"{revs if short else count} (after its dependents)")
    else:
        head = f"  ~ {s.node} migrate {s.from_ or 'base'} -> {s.to}: {revs if short else count}"
    if short:
        return [head]
    return [head + ":"] + textwrap.wrap(revs, width=100, initial_indent="      ", subsequent_indent="      ",
                                        break_on_hyphens=False)
