"""The commands that only read: `status`, `history`, `show` and `revert --dry-run`. They work
from the journal alone (with every host and database down, with broken manifests) unless asked
to look at the world (`status --live`)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .access import journal_url, open_journal, register_settings_secrets
from .errors import InputError, StepFailed
from .journal import Step
from .lifecycle import Outcome, Phase, Release, ReleaseState, RevertState, nothing_to_revert
from .manifests import Project, load_project
from .secrets import mask_url
from .transports import TransportFactory, make_transports

# status, history and show import only the journal and the manifests' models: they answer in an
# incident, from a shell that may have just started. What only `--live` or `revert --dry-run`
# needs is imported there.


def status(project_dir: Path | str, *, journal: str | None = None, live: bool = False,
           parallelism: int = 16, transports: TransportFactory = make_transports) -> dict[str, Any]:
    """The latest release record and what is in place now, from the journal alone: it works
    with every host and database down, and with broken manifests (said in `warnings`).
    `live` also asks the hosts' probes and the databases, and reports where they differ."""
    root = Path(project_dir).resolve()
    register_settings_secrets(root)
    out: dict[str, Any] = {"release": None, "state": None, "services": {}, "databases": {}}
    warnings: list[str] = []
    project = _project_for_status(root, live, warnings)
    j = open_journal(root, journal, create=False)
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
        from .probes import read_state

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
    """Releases, newest first: state, times (ISO 8601, UTC), who ran them from which commit."""
    root = Path(project_dir).resolve()
    register_settings_secrets(root)
    j = open_journal(root, journal, create=False)
    if j is None:
        return []
    try:
        # Only a release that was reverted needs its steps: its record's end is the revert's.
        return [_summary(r, j.steps(r.id, Phase.APPLY) if r.revert_state else []) for r in j.releases(limit)]
    finally:
        j.close()


def show(project_dir: Path | str, name: str | None = None, *, journal: str | None = None) -> dict[str, Any]:
    """One release from the journal (default: the latest; by name: its newest record), with every
    step it journaled, apply and revert, and its events. An unknown name is invalid input (2)."""
    if name is not None:
        from .plan import check_release_name

        check_release_name(name)
    root = Path(project_dir).resolve()
    url = journal_url(root, journal)
    j = open_journal(root, journal, create=False)
    if j is None:
        raise InputError(f"no release in the journal {mask_url(url)}")
    try:
        release = j.latest() if name is None else next((r for r in j.releases() if r.name == name), None)
        if release is None:
            raise InputError(f"unknown release {name!r}: not in the journal {mask_url(url)}" if name
                             else f"no release in the journal {mask_url(url)}")
        steps = j.steps(release.id)
        out = _summary(release, [s for s in steps if s.phase == Phase.APPLY])
        out["steps"] = [_step(s, release) for s in steps]
        out["events"] = [{"event": e, "detail": d} for e, d in j.events(release.id)]
        return out
    finally:
        j.close()


def iso(ts: float | None) -> str | None:
    """A journal time as ISO 8601 in UTC, to the second: 2026-12-02T07:30:00Z."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _summary(r: Release, apply_steps: list[Step]) -> dict[str, Any]:
    """A release record as `history` and `show` give it. `finished_at` is the end of the apply;
    a revert moves the record's own end, so then the apply's last step tells it."""
    finished = None if r.state == ReleaseState.IN_PROGRESS else r.finished_at
    reverted_at = None
    if r.revert_state is not None:
        ends = [s.ended_at or s.started_at for s in apply_steps]
        finished = max(ends) if ends else r.started_at
        reverted_at = r.finished_at if r.state == ReleaseState.REVERTED else None
    git = r.manifests.get("git") or {}
    return {"release": r.name, "id": r.id, "state": r.state, "revert_state": r.revert_state,
            "previous": r.previous, "run_by": r.manifests.get("run_by") or r.hostname,
            "commit": git.get("commit"), "dirty": git.get("dirty"),
            "started_at": iso(r.started_at), "finished_at": iso(finished), "reverted_at": iso(reverted_at),
            "duration": round(finished - r.started_at, 3) if finished is not None else None,
            "message": r.message}


def _step(s: Step, release: Release) -> dict[str, Any]:
    outcome: str = s.status
    if s.status == Outcome.INTENT:  # no outcome: still running, or in doubt after a crash
        running = ReleaseState.IN_PROGRESS if s.phase == Phase.APPLY else RevertState.IN_PROGRESS
        now = release.state if s.phase == Phase.APPLY else release.revert_state
        outcome = "running" if now == running else "in_doubt"
    return {"phase": s.phase, "node": s.node, "kind": s.kind, "host": s.host, "revision": s.revision,
            "action": s.action, "outcome": outcome, "exit_code": s.exit_code,
            "duration": round(s.ended_at - s.started_at, 3) if s.ended_at is not None else None,
            "started_at": iso(s.started_at), "from": s.before, "to": s.after, "detail": s.detail,
            "stderr": s.stderr or "", "stdout": s.stdout or ""}


def revert_plan(project_dir: Path | str, *, journal: str | None = None) -> dict[str, Any]:
    """What `revert` would do now, computed as it computes it (the journal's steps through
    `runs.changes_to_revert`, the journaled manifests' graph reversed), touching nothing: no lock,
    no journal write, no host, no database. Raises what `revert` would raise before it starts."""
    import networkx as nx

    from .graph import build_graph, waves, with_downgrades
    from . import runs
    from .sources import journaled_project

    root = Path(project_dir).resolve()
    url = journal_url(root, journal)
    empty = InputError(f"no release in the journal {mask_url(url)}: nothing to revert")
    j = open_journal(root, journal, create=False)
    if j is None:
        raise empty
    try:
        release = j.latest()
        if release is None:
            raise empty
        out = {"release": release.name, "state": release.state, "revert_state": release.revert_state,
               "started_at": iso(release.started_at), "waves": [], "steps": []}
        done = nothing_to_revert(release)
        if done:
            return {**out, "nothing_to_revert": done}
        services, databases = runs.changes_to_revert(j.steps(release.id, Phase.APPLY),
                                                     j.steps(release.id, Phase.REVERT))
        project = journaled_project(root, release.manifests, databases)
        missing = sorted(n for n in [*services, *databases] if n not in project.nodes)
        if missing:
            raise StepFailed(f"release {release.name}: the journal's copy of the manifests has no "
                             f"{', '.join(missing)}, which the release changed; revert cannot know how to undo it")
        changing = {*services, *databases}
        g = with_downgrades(build_graph(project), set(release.manifests.get("downgrades") or []),
                                   changing)
        # The walk passes through nodes with nothing to undo: order only those that have something.
        closure = nx.transitive_closure_dag(g.reverse(copy=True))
        out["waves"] = waves(closure.subgraph(changing))
        revisions = j.recorded_revisions()
        for node in (n for wave in out["waves"] for n in wave):
            if node in services:
                out["steps"] += [{"node": node, "kind": "service", "host": c.host, "restore": c.restore,
                                  "remove": c.remove} for c in services[node]]
            else:
                out["steps"].append({"node": node, "kind": "database", "from": revisions.get(node, (None,))[0],
                                     "restore": databases[node]})
        return out
    finally:
        j.close()
