"""The heap of an apply or a revert, frozen while it runs.

Loading a long history's revision scripts, on top of the imports, leaves a heap on which one full
garbage collection takes 0.1-0.2 s, and the allocations of a run trigger one or two. What exists
when a command starts (and again once it has loaded the scripts and made the plan) lives until it
ends, so it is frozen (`gc.freeze`): collections during the run go over what the run itself made,
and the heap is thawed as the command returns. A caller that froze the heap itself keeps it so.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
_ours = False  # the heap is frozen by `frozen`, not by whoever called the command


def for_a_command_line() -> None:
    """The `release` process's collector: the imports make hundreds of thousands of objects and
    little garbage, so collecting less often saves a tenth of a second of start-up. Not set for a
    program that imports the library."""
    gc.set_threshold(50_000, 20, 20)


def freeze() -> None:
    """Freeze what exists now, unless the heap was frozen by somebody else."""
    global _ours
    if _ours or not gc.get_freeze_count():
        gc.freeze()
        _ours = True


def frozen(command: Callable[P, T]) -> Callable[P, T]:
    """`command` runs with the heap frozen (`freeze` again inside adds what it made meanwhile)."""
    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        global _ours
        outer = _ours or bool(gc.get_freeze_count())
        freeze()
        try:
            return command(*args, **kwargs)
        finally:
            if not outer and _ours:
                gc.unfreeze()
                _ours = False
    return run
