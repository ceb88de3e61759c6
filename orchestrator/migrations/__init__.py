"""Alembic, driven in-process (SPEC §2); this package re-exports what callers import from it."""

from ..secrets import mask_url
from .archive import archive, merge_archives, restore
from .risks import risks
from .runtime import Direction, Hop, MigrationRunner, in_worker, resolve_url

__all__ = [
    "Direction",
    "Hop",
    "MigrationRunner",
    "archive",
    "in_worker",
    "mask_url",
    "merge_archives",
    "resolve_url",
    "restore",
    "risks",
]
