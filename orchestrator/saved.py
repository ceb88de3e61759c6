"""Saved plans: `plan --out FILE` writes the plan with a fingerprint of everything it was computed
from; `apply --plan FILE` runs it only if that fingerprint still holds (Terraform's `plan -out`).

The fingerprint has one digest per source, so that a stale plan says what changed: the
manifests, a migration script, the journal's latest record, a host's running version, a
database's revision.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .lifecycle import Release
from .migrations import archive
from .plan import Plan
from .scope import Scope

FORMAT = 1
WHAT = {
    "manifests": "the manifests changed",
    "migrations": "a migration script changed",
    "journal": "the journal has a newer or changed release record",
    "hosts": "a host reports another running version",
    "databases": "a database is at another revision",
}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(p: Plan, latest: Release | None) -> dict[str, str]:
    project = p.project
    scripts = {name: archive(project.root / spec.migrations) for name, spec in sorted(project.databases.items())}
    record = None if latest is None else [latest.id, latest.name, str(latest.state), str(latest.revert_state),
                                          latest.finished_at]
    return {
        "manifests": _digest(project.sources),
        "migrations": _digest(scripts),
        "journal": _digest(record),
        "hosts": _digest({s.node: s.current for s in p.steps if s.kind == "service"}),
        "databases": _digest({s.node: s.from_ for s in p.steps if s.kind == "database"}),
    }


@dataclass(frozen=True)
class SavedPlan:
    release: str
    force: tuple[str, ...]
    scope: Scope
    fingerprint: dict[str, str]
    plan: dict[str, Any]


def save(path: Path, p: Plan, latest: Release | None, force: tuple[str, ...]) -> None:
    doc = {"format": FORMAT, "release": p.release, "force": list(force), "scope": p.scope.to_json(),
           "fingerprint": fingerprint(p, latest), "plan": p.to_json()}
    Path(path).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def load(path: Path) -> SavedPlan:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT}")
        return SavedPlan(doc["release"], tuple(doc.get("force") or ()), Scope.from_json(doc.get("scope")),
                         dict(doc["fingerprint"]), doc["plan"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: not a saved plan of this tool: {exc}") from None


def check(saved: SavedPlan, p: Plan, latest: Release | None, path: Path) -> None:
    """Refuse (exit 2, nothing changed) unless `p`, computed now, is the plan that was saved."""
    now = fingerprint(p, latest)
    changed = [WHAT[k] for k in WHAT if saved.fingerprint.get(k) != now[k]]
    if not changed and p.to_json() != saved.plan:
        changed = ["the plan computed now differs from the saved one"]
    if changed:
        raise InputError(f"the plan is stale: {'; '.join(changed)} since {path} was saved; "
                         "run `release plan --out` again and review it")
