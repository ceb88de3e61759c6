"""Alembic, driven in-process (SPEC §2); this package re-exports what callers import from it."""

from ..secrets import mask_url
from .runtime import Direction, Hop, MigrationRunner, archive, in_worker, merge_archives, resolve_url, restore, risks

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
