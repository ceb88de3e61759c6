"""Alembic, driven in-process, split the way Alembic itself is split.

- `scripts`: the revision graph of one script directory, with no database (Alembic's `script/`).
- `offline`: each revision's SQL as Alembic's offline mode renders it, one revision at a time.
- `runtime`: the database side: URLs, connections, the heads a database is at (Alembic's
  `runtime/`); `session`: a run's revisions on one connection, one transaction each, on the one
  worker thread that runs Alembic.
- `risks`: warnings for destructive or long-locking statements in migration SQL.
- `archive`: the journal's copy of a script directory, for reverts.

This package re-exports what callers import from `orchestrator.migrations`. Note that `risks`
and `archive` here are the functions, not the submodules of the same name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..secrets import mask_url
from .archive import archive, merge_archives, restore, scratch
from .risks import Risk, RiskScan, risks

if TYPE_CHECKING:
    from .offline import Rendered
    from .runtime import MigrationRunner, in_worker, resolve_url
    from .scripts import Direction, Hop, ScriptGraph
    from .session import Session

# Importing Alembic is a third of a second: a release without databases never pays for it, so
# the names whose modules import it are loaded when first used (PEP 562).
_LAZY = {"Rendered": "offline", "MigrationRunner": "runtime", "in_worker": "runtime", "resolve_url": "runtime",
         "Direction": "scripts", "Hop": "scripts", "ScriptGraph": "scripts", "Session": "session"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Direction",
    "Hop",
    "MigrationRunner",
    "Rendered",
    "Risk",
    "RiskScan",
    "ScriptGraph",
    "Session",
    "archive",
    "in_worker",
    "mask_url",
    "merge_archives",
    "resolve_url",
    "restore",
    "risks",
    "scratch",
]
