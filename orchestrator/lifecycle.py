"""The release lifecycle: states, step outcomes, and the rules that move a release between them.

Pure functions over journal records: whether an apply may start, continues an earlier record or
must be refused; what a record's effective state is (a dead in-progress run reads `interrupted`).
Storage (journal.py) only stores and reads; the decisions are made here and unit-tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .errors import InputError


class Phase(StrEnum):
    APPLY = "apply"
    REVERT = "revert"


class ReleaseState(StrEnum):
    """A release record's `state`, and (for a revert under way) its `revert_state`."""

    IN_PROGRESS = "in_progress"
    APPLIED = "applied"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    REVERTED = "reverted"


class RevertState(StrEnum):
    IN_PROGRESS = "in_progress"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    DONE = "done"


class Outcome(StrEnum):
    """A journaled step's status. `intent` with no outcome is in doubt: it may have happened.
    `skipped`: journaled, then never started because the run was stopping."""

    INTENT = "intent"
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


UNFINISHED = (ReleaseState.FAILED, ReleaseState.INTERRUPTED, ReleaseState.IN_PROGRESS)
_PARTLY_REVERTED = (RevertState.IN_PROGRESS, RevertState.INTERRUPTED, RevertState.FAILED)


@dataclass(frozen=True)
class Release:
    """A release record as the journal stored it, with the facts needed to read it right.

    `holder_gone`: the record's process ran on this machine and is no longer running. The
    journal finds that out; what it means for the state is decided here.
    """

    id: int
    name: str
    stored_state: str
    stored_revert_state: str | None
    previous: str | None
    started_at: float
    finished_at: float | None
    hostname: str | None
    pid: int | None
    proc_start: float | None
    manifests: dict[str, Any]
    message: str | None
    holder_gone: bool = False
    steps_run: int = 0  # apply steps that started (intent written and not skipped)

    @property
    def state(self) -> ReleaseState:
        return effective_state(self.stored_state, self.holder_gone)

    @property
    def revert_state(self) -> RevertState | None:
        if self.stored_revert_state is None:
            return None
        if self.stored_revert_state == RevertState.IN_PROGRESS and self.holder_gone:
            return RevertState.INTERRUPTED
        return RevertState(self.stored_revert_state)

    @property
    def partly_reverted(self) -> bool:
        """A revert of it started and did not finish: some hosts may be back, others not."""
        return self.state != ReleaseState.REVERTED and self.revert_state in _PARTLY_REVERTED


def effective_state(stored: str, holder_gone: bool) -> ReleaseState:
    """An in-progress record whose process is gone reads as interrupted: nobody is running it,
    and `release revert` must be able to take it over without a manual step."""
    state = ReleaseState(stored)
    if state == ReleaseState.IN_PROGRESS and holder_gone:
        return ReleaseState.INTERRUPTED
    return state


def resumes(latest: Release | None, name: str) -> bool:
    """An apply of `name` continues the latest record instead of opening a new one: it is the
    same name and unfinished, or half reverted (its revert must still know what came before)."""
    return latest is not None and latest.name == name and (
        latest.state in UNFINISHED or latest.partly_reverted)


@dataclass(frozen=True)
class ApplyDecision:
    resume_of: int | None  # the record to continue, or None for a new one
    over_revert: bool = False  # continues a half-reverted release (journaled as such)


def decide_apply(latest: Release | None, name: str, *, force_release: bool) -> ApplyDecision:
    """Whether an apply of `name` may start now; raises InputError (nothing changed) if not.

    An unfinished release in which no step ran (an apply refused at preflight) changed nothing:
    it does not stand in the way of another release.
    """
    if latest is not None and latest.partly_reverted and not force_release:
        # Applying over a revert that did not finish would leave that release half undone for
        # good: the next `release revert` undoes the new apply instead.
        raise InputError(f"release {latest.name} is partly reverted (revert {latest.revert_state}): "
                         "run `release revert` to finish it first (--force-release to go on anyway)")
    if resumes(latest, name):
        assert latest is not None
        return ApplyDecision(latest.id, over_revert=latest.partly_reverted)
    if latest is not None and latest.state in UNFINISHED and latest.steps_run and not force_release:
        raise InputError(f"release {latest.name} is {latest.state}: run `release revert` first, "
                         f"or `release apply {latest.name}` to continue it (--force-release to go on anyway)")
    return ApplyDecision(None)


def plan_notes(latest: Release | None, name: str) -> list[str]:
    """What a plan of `name` must say about the latest record before its steps."""
    if latest is None:
        return []
    if resumes(latest, name):
        if latest.partly_reverted:
            return [f"continues release {name} over its {latest.revert_state} revert (apply needs "
                    "--force-release): hosts the revert put back are deployed again"]
        return [f"continues release {name} ({latest.state}): steps already done are skipped"]
    if latest.state in UNFINISHED and latest.steps_run:
        return [f"release {latest.name} is {latest.state}: run `release revert` first "
                f"(or apply it again to continue it)"]
    return []


def nothing_to_revert(latest: Release | None) -> str | None:
    """Why a revert has nothing to do (said, exit 0), or None when it must run."""
    if latest is not None and latest.state == ReleaseState.REVERTED:
        return f"release {latest.name} is already reverted"
    return None


def _ending(ok: bool, stopped: bool, failed: bool) -> str:
    """A run that did not succeed was interrupted when it stopped on the user's word with
    nothing failed; otherwise it failed."""
    return "ok" if ok else "interrupted" if stopped and not failed else "failed"


def run_outcome(*, ok: bool, stopped: bool, failed: bool) -> ReleaseState:
    return {"ok": ReleaseState.APPLIED, "interrupted": ReleaseState.INTERRUPTED,
            "failed": ReleaseState.FAILED}[_ending(ok, stopped, failed)]


def revert_outcome(*, ok: bool, stopped: bool, failed: bool) -> RevertState:
    return {"ok": RevertState.DONE, "interrupted": RevertState.INTERRUPTED,
            "failed": RevertState.FAILED}[_ending(ok, stopped, failed)]
