"""Alembic, driven in-process (SPEC §2), split the way Alembic itself is split.

- `scripts`: the revision graph of one script directory, with no database (Alembic's `script/`).
- `runtime`: the database side: URLs, connections, applying one revision per transaction,
  and the one worker thread that runs Alembic (Alembic's `runtime/`).
- `risks`: warnings for destructive or long-locking statements in migration SQL.
- `archive`: the journal's copy of a script directory, for reverts.

This package re-exports what callers import from `orchestrator.migrations`. Note that `risks`
and `archive` here are the functions, not the submodules of the same name.
"""

from ..secrets import mask_url
from .archive import archive, merge_archives, restore
from .risks import risks
from .runtime import MigrationRunner, in_worker, resolve_url
from .scripts import Direction, Hop, ScriptGraph

__all__ = [
    "Direction",
    "Hop",
    "MigrationRunner",
    "ScriptGraph",
    "archive",
    "in_worker",
    "mask_url",
    "merge_archives",
    "resolve_url",
    "restore",
    "risks",
]
