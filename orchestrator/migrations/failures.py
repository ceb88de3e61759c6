"""What a revision that did not go through says: which database, which revision and which
way, where the database stays, and whether the revision may be half-applied."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import StepFailed
from ._guards import _scrub

if TYPE_CHECKING:
    from .runtime import MigrationRunner
    from .scripts import Hop

VERB = {"up": "upgrade", "down": "downgrade"}


class NotAtExpectedRevision(Exception):
    pass


def what(runner: MigrationRunner, hop: Hop) -> str:
    return f"database {runner.name}: {VERB[hop.direction]} of revision {runner.scripts.label(hop.revision)}"


def failure(runner: MigrationRunner, hop: Hop, exc: Exception, *, ours: bool, split: bool = False) -> StepFailed:
    """`ours`: the revision ran in the tool's transaction; `split`: its autocommit_block()
    committed the part before it."""
    if isinstance(exc, StepFailed) and not split:
        return exc
    where = what(runner, hop)
    if isinstance(exc, NotAtExpectedRevision) and not split:
        return StepFailed(f"{where}: {exc}; nothing was changed")
    if not ours:
        return StepFailed(
            f"{where} failed: {type(exc).__name__}: {_scrub(reason(exc), runner.url)}. Its env.py "
            "did not run on the connection the tool handed over (config.attributes['connection']), so "
            "the revision ran outside the tool's transaction and MAY BE HALF-APPLIED; check the schema "
            "by hand")
    try:
        now = fmt(runner.current_heads())
    except StepFailed:
        now = "an unknown revision (cannot read it back)"
    if split:
        return StepFailed(
            f"{where} failed after its autocommit_block() had committed the part of the revision "
            f"before it (Alembic commits there; that part cannot be rolled back): the revision MAY BE "
            f"HALF-APPLIED while the version table still says {now}; check the schema by hand: "
            f"{type(exc).__name__}: {_scrub(reason(exc), runner.url)}")
    if isinstance(exc, ImportError):
        return StepFailed(f"{runner.scripts.load_error(exc)}; the {VERB[hop.direction]} of revision "
                          f"{hop.revision} was rolled back and the database stays at {now}")
    return StepFailed(f"{where} failed and was rolled back; the database stays at {now}: "
                      f"{type(exc).__name__}: {_scrub(reason(exc), runner.url)}")


def reason(exc: BaseException) -> str:
    """A driver error without SQLAlchemy's wrapping and background link."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text or type(exc).__name__


def fmt(heads: tuple[str, ...]) -> str:
    return ", ".join(heads) if heads else "base (no revision)"
