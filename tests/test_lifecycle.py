"""The release lifecycle's rules, decided from records alone (no journal, no I/O)."""

from __future__ import annotations

import pytest

from orchestrator.errors import InputError
from orchestrator.lifecycle import (Release, ReleaseState, RevertState, decide_apply, effective_state,
                                    nothing_to_revert, plan_notes, run_outcome)


def record(name: str = "v1", state: str = "applied", revert_state: str | None = None, *, gone: bool = False,
           steps_run: int = 3, rid: int = 7) -> Release:
    return Release(id=rid, name=name, stored_state=state, stored_revert_state=revert_state, previous=None,
                   started_at=0.0, finished_at=None, hostname="h", pid=1, proc_start=0.0, manifests={},
                   message=None, holder_gone=gone, steps_run=steps_run)


def test_a_dead_in_progress_run_reads_interrupted_and_a_live_one_does_not() -> None:
    assert effective_state("in_progress", holder_gone=True) == ReleaseState.INTERRUPTED
    assert effective_state("in_progress", holder_gone=False) == ReleaseState.IN_PROGRESS
    assert effective_state("applied", holder_gone=True) == ReleaseState.APPLIED
    assert record(state="applied", revert_state="in_progress", gone=True).revert_state == RevertState.INTERRUPTED


def test_first_apply_and_apply_after_a_finished_release_open_a_new_record() -> None:
    assert decide_apply(None, "v1", force_release=False).resume_of is None
    assert decide_apply(record("v1"), "v2", force_release=False).resume_of is None
    assert decide_apply(record("v1", "reverted", "done"), "v1", force_release=False).resume_of is None


@pytest.mark.parametrize("state", ["failed", "interrupted"])
def test_same_name_after_a_failure_continues_the_record(state: str) -> None:
    d = decide_apply(record("v2", state), "v2", force_release=False)
    assert d.resume_of == 7 and not d.over_revert


@pytest.mark.parametrize("state", ["failed", "interrupted"])
def test_another_name_after_a_failure_is_refused_unless_forced(state: str) -> None:
    with pytest.raises(InputError, match="run `release revert` first"):
        decide_apply(record("v2", state), "v3", force_release=False)
    assert decide_apply(record("v2", state), "v3", force_release=True).resume_of is None


def test_a_refused_apply_in_which_nothing_ran_does_not_block_another_release() -> None:
    refused = record("v2", "failed", steps_run=0)
    assert decide_apply(refused, "v3", force_release=False).resume_of is None
    assert plan_notes(refused, "v3") == []


def test_a_half_reverted_release_must_be_finished_first() -> None:
    half = record("v2", "failed", "failed")
    with pytest.raises(InputError, match="partly reverted"):
        decide_apply(half, "v2", force_release=False)
    d = decide_apply(half, "v2", force_release=True)
    assert d.resume_of == 7 and d.over_revert
    assert "over its failed revert" in plan_notes(half, "v2")[0]


def test_revert_of_a_reverted_release_has_nothing_to_do() -> None:
    assert nothing_to_revert(record("v1", "reverted", "done")) == "release v1 is already reverted"
    assert nothing_to_revert(record("v1", "failed")) is None


def test_a_stop_with_no_failure_is_an_interrupt() -> None:
    assert run_outcome(ok=True, stopped=False, failed=False) == ReleaseState.APPLIED
    assert run_outcome(ok=False, stopped=True, failed=False) == ReleaseState.INTERRUPTED
    assert run_outcome(ok=False, stopped=True, failed=True) == ReleaseState.FAILED
