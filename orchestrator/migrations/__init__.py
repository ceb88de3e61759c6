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

from ..secrets import mask_url
from .archive import archive, merge_archives, restore, scratch
from .offline import Rendered
from .risks import Risk, RiskScan, risks
from .runtime import MigrationRunner, in_worker, resolve_url
from .scripts import Direction, Hop, ScriptGraph
from .session import Session

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
