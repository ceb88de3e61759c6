"""The journaled step: the one write-ahead protocol every change goes through.

fault point -> intent (durable) -> fault point -> [slot] -> stop check -> run -> outcome ->
fault point -> report -> log. Journal writes wait for fsync, so they run off the event loop
(other hosts' commands go on meanwhile), in one writer thread that commits the writes waiting
together (`journal_writer`), and are awaited (the intent is durable before the command starts).
A failure is registered before its outcome is written, so that a step waiting for a slot
meanwhile sees that the run is stopping and does not start. A step may hold its successful
outcome for the run's next journal write instead (`hold_outcome`): a database revision's outcome
then shares a commit with the next revision's intent. A step whose change takes effect only when
it commits (a database revision's transaction) may start while its intent is being written
(`early`): what it does before its intent is durable is undone by a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, AsyncContextManager, TypeVar

from .faults import FaultPoints
from .journal import Journal
from .journal_writer import JournalWriter
from .lifecycle import Outcome, Phase
from .logs import get_logger
from .secrets import mask_text

T = TypeVar("T")
NOT_STARTED = "not started: the run was stopping"
TAIL_LINES, TAIL_CHARS = 10, 2000


def tail(text: str | None, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str | None:
    """The last lines of a command's output, masked, as reports and notifications show it."""
    kept = "\n".join((text or "").rstrip().splitlines()[-lines:])[-chars:]
    return mask_text(kept) or None


@dataclass
class StepReport:
    """One line of a run's result (`--json`'s `steps`)."""

    node: str
    kind: str
    host: str | None
    action: str
    outcome: str  # ok | failed | skipped
    exit_code: int | None = None
    duration: float = 0.0
    revision: str | None = None
    from_: str | None = None
    to: str | None = None
    detail: str | None = None
    stderr_tail: str | None = None  # a failed command's last lines of stderr, masked

    @property
    def where(self) -> str:
        """`orders@app2` for a host's step; the node alone for a database's."""
        return f"{self.node}@{self.host}" if self.host else self.node

    @property
    def label(self) -> str:
        """`orders@app2`, or `orders-db (o3_status)` for a database's step."""
        return f"{self.node} ({self.revision})" if self.revision and not self.host else self.where

    @property
    def why(self) -> str:
        """One line saying why the step did not succeed: `exit 3: <its last line of stderr>`."""
        last = (self.stderr_tail or "").splitlines()[-1:]
        if last:
            return (f"exit {self.exit_code}: " if self.exit_code is not None else "") + last[0]
        return self.detail or (f"exit {self.exit_code}" if self.exit_code is not None else self.outcome)

    def to_json(self) -> dict[str, Any]:
        out = {"node": self.node, "kind": self.kind, "host": self.host, "action": self.action,
               "outcome": self.outcome, "exit_code": self.exit_code, "duration": round(self.duration, 3),
               "from": self.from_, "to": self.to}
        if self.revision:
            out["revision"] = self.revision
        if self.detail:
            out["detail"] = self.detail
        if self.stderr_tail:
            out["stderr_tail"] = self.stderr_tail
        return out


@dataclass(frozen=True)
class StepIntent:
    """What the journal records before a step runs."""

    node: str
    kind: str
    action: str
    host: str | None = None
    revision: str | None = None
    before: str | None = None
    after: str | None = None

    @property
    def where(self) -> str | None:
        return self.host or self.revision

    @property
    def label(self) -> str:
        return f"{self.node} on {self.host}" if self.host else self.node


@dataclass
class StepResult:
    ok: bool
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    detail: str | None = None
    # Ended by a second interrupt, on the user's word: journaled as failed (revert undoes it,
    # resume redoes it) but not a failure of the release, which stays `interrupted`.
    killed: bool = False
    in_place: bool = False  # a host now runs the intent's `after` version


@dataclass
class Run:
    """One apply or revert under way: its journal record, stop signal, failures and reports."""

    journal: Journal
    release_id: int
    release: str
    phase: Phase
    parallelism: int = 16
    faults: FaultPoints = field(default_factory=FaultPoints)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reports: list[StepReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    killed: bool = False  # a second interrupt killed the running commands

    def __post_init__(self) -> None:
        # Commands running at once over the whole run (deploys, reverts, health checks).
        self.slots = asyncio.Semaphore(max(1, self.parallelism))
        self.log = get_logger(release=self.release, phase=str(self.phase))
        self.writer = JournalWriter(self.journal.engine)

    @property
    def stopping(self) -> bool:
        return self.stop.is_set() or bool(self.failures)

    @property
    def succeeded(self) -> bool:
        return not self.failures and not self.stop.is_set()

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def skipped(self, node: str, kind: str, why: str, *, host: str | None = None, action: str = "none",
                revision: str | None = None) -> None:
        """A step that was never journaled because the run stopped before it."""
        self.reports.append(StepReport(node, kind, host, action, "skipped", revision=revision, detail=why))

    def blocked(self, node: str, kind: str, why: str) -> None:
        self.log.warning("node.not_started", node=node, reason=why)
        self.skipped(node, kind, why)

    def _hit(self, boundary: str, intent: StepIntent) -> None:
        self.faults.hit(boundary, self.phase, intent.node, intent.where)

    async def step(self, intent: StepIntent, start: Callable[..., Awaitable[T]],
                   finish: Callable[[T], Awaitable[StepResult]], *,
                   gate: AsyncContextManager[Any] | None = None, hold_outcome: bool = False,
                   early: bool = False,
                   **start_fields: Any) -> bool:
        """Run one journaled step. `start` is the change itself: it begins only inside `gate`
        (a parallelism slot) and only if the run is not stopping; `finish` turns what it
        returned into the step's result (after a health check, say). True when the step is ok.

        `hold_outcome`: a successful outcome is not committed on its own but with the run's next
        journal write (`JournalWriter.hold`); the caller must `flush` the writer before it stops
        stepping. For a step whose loss in a crash is decided afterwards by reading the target
        (a database revision), and that is followed at once by another step.

        `early`: `start` is called at once, while the intent is being written, with a future that
        says True once the intent is durable and the run is not stopping, or False if the step
        must not happen. Until it says True, `start` may do everything but make its change
        take effect: a database revision runs in its transaction and commits only on True (rolls
        back on False), so a crash before the intent is durable leaves nothing to undo. Its
        statements then run while the intent's commit waits for the disk."""
        log = self.log.bind(node=intent.node, host=intent.host)
        if intent.revision:
            log = log.bind(revision=intent.revision)
        self._hit("before-intent", intent)
        write = self.writer.write(functools.partial(
            self.journal.write_intent, release_id=self.release_id, phase=self.phase, node=intent.node,
            kind=intent.kind, host=intent.host, action=intent.action, revision=intent.revision,
            before=intent.before, after=intent.after))
        # A thread's future: an early start hands it to a worker thread, which must hear the
        # answer even if this loop is no longer turning. Only early steps pay for one.
        go: Future[bool] | None = None
        started = None
        if early:
            assert gate is None, "an early start runs before any slot could be taken"
            go = Future()
            started = asyncio.ensure_future(start(go))
        try:
            step_id: int = await write
            self._hit("after-intent", intent)
            t0 = time.monotonic()
            async with gate or contextlib.nullcontext():
                if self.stopping:  # it began while the intent was being written or a slot awaited
                    if go is not None:
                        await _called_off(go, started)
                    await self.writer.write(functools.partial(
                        self.journal.write_outcome, step_id=step_id, status=Outcome.SKIPPED,
                        detail=NOT_STARTED))
                    self.skipped(intent.node, intent.kind, NOT_STARTED, host=intent.host,
                                 action=intent.action, revision=intent.revision)
                    log.info(f"{intent.action}.not_started", why=NOT_STARTED)
                    return False
                if go is not None:
                    go.set_result(True)  # the early start commits meanwhile
                log.info(f"{intent.action}.start", **start_fields)
                value = await (started if started is not None else start())
        finally:
            if go is not None and not started.done():  # the intent failed, or we were cancelled
                await _called_off(go, started)
        result = await finish(value)
        self._hit("after-command", intent)
        if not result.ok and not result.killed:
            self.fail(f"{intent.label}: {result.detail}")
        outcome = functools.partial(
            self.journal.write_outcome, step_id=step_id, status=Outcome.OK if result.ok else Outcome.FAILED,
            exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr, detail=result.detail,
            in_place=(intent.node, intent.host, intent.after) if result.ok and result.in_place else None,
            release_id=self.release_id)
        if result.ok and hold_outcome:
            # The fault point keeps its meaning: it fires where the outcome becomes durable.
            self.writer.hold(outcome, durable=lambda: self._hit("after-outcome", intent))
        else:
            await self.writer.write(outcome)
            self._hit("after-outcome", intent)
        duration = time.monotonic() - t0
        self.reports.append(StepReport(
            intent.node, intent.kind, intent.host, intent.action, "ok" if result.ok else "failed",
            result.exit_code, duration, revision=intent.revision, from_=intent.before, to=intent.after,
            detail=result.detail, stderr_tail=None if result.ok else tail(result.stderr)))
        if result.ok:
            log.info(f"{intent.action}.done", version=intent.after, duration=round(duration, 3))
        elif result.killed:
            log.warning(f"{intent.action}.killed", why=result.detail)
        else:
            log.error(f"{intent.action}.failed", why=result.detail)
        return result.ok


async def _called_off(go: Future[bool], started: asyncio.Future[Any]) -> None:
    """An early start told not to go on, and waited for: what it prepared is undone before the
    step is journaled as not started or the error goes up."""
    if not go.done():
        go.set_result(False)
    await asyncio.gather(asyncio.shield(started), return_exceptions=True)
