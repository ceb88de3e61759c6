"""The async executor: a DAG walk over the graph, forward for apply and reversed for revert.

A node starts as soon as everything it depends on succeeded on every host (not wave by wave).
Each service rolls over its hosts `max_parallel` at a time with a health gate after each host.
Every step is journaled before it runs (intent) and when it ends (outcome).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import networkx as nx

from . import migrations
from .errors import ReleaseError
from .faults import FaultPoints
from .journal import FAILED_STEP, OK, SKIPPED, Journal, Step
from .logs import get_logger
from .manifests import DatabaseSpec, Project, ServiceSpec
from .plan import runner_for
from .transports.base import Command, CommandResult, Transport

APPLY, REVERT = "apply", "revert"


@dataclass
class StepReport:
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

    def to_json(self) -> dict[str, Any]:
        out = {"node": self.node, "kind": self.kind, "host": self.host, "action": self.action,
               "outcome": self.outcome, "exit_code": self.exit_code, "duration": round(self.duration, 3),
               "from": self.from_, "to": self.to}
        if self.revision:
            out["revision"] = self.revision
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class HostChange:
    """What revert must restore on one host of one service, from the apply steps of a release."""

    node: str
    host: str
    restore: str | None  # the version before the release; None: there was none
    remove: str | None  # the version the release put (or may have put) in place


@dataclass
class Executor:
    graph: nx.DiGraph
    project: Project
    journal: Journal
    release_id: int
    release: str
    phase: str
    transports: dict[str, Transport]
    parallelism: int = 16
    faults: FaultPoints = field(default_factory=FaultPoints)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reports: list[StepReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    killed: bool = False  # a second interrupt killed the running commands

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(max(1, self.parallelism))
        self.log = get_logger(release=self.release, phase=self.phase)

    # -- the walk ----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.stop.is_set() or bool(self.failures)

    def fail(self, message: str) -> None:
        self.failures.append(message)

    async def walk(self, jobs: dict[str, Callable[[], Awaitable[bool]]]) -> bool:
        """Run `jobs` in dependency order (reversed for revert); nodes without a job just pass."""
        done = {n: asyncio.Event() for n in self.graph}
        ok: dict[str, bool] = {}

        async def run(node: str) -> None:
            deps = list(self.graph.successors(node) if self.phase == REVERT else self.graph.predecessors(node))
            try:
                for d in deps:
                    await done[d].wait()
                job = jobs.get(node)
                if job is None:
                    ok[node] = all(ok[d] for d in deps)
                elif all(ok[d] for d in deps) and not self.stopping:
                    ok[node] = await job()
                else:
                    ok[node] = False
                    waits = [d for d in deps if not ok[d]]
                    why = f"waits on {', '.join(waits)}" if waits else "release stopping"
                    self.log.warning("node.not_started", node=node, reason=why)
                    self.reports.append(StepReport(node, self.graph.nodes[node]["kind"], None,
                                                   "none", "skipped", detail=why))
            except Exception as exc:  # noqa: BLE001 - a bug in one node must not hang its dependents
                ok[node] = False
                self.fail(f"{node}: {exc}")
                self.log.exception("node.crashed", node=node)
            finally:
                done[node].set()

        await asyncio.gather(*(run(n) for n in self.graph))
        return all(ok.values()) and not self.failures and not self.stop.is_set()

    # -- commands ----------------------------------------------------------------------------

    def env(self, spec: ServiceSpec, host: str, action: str, version: str | None,
            previous: str | None) -> dict[str, str]:
        return {
            "RELEASE_NAME": self.release, "RELEASE_SERVICE": spec.name, "RELEASE_VERSION": version or "",
            "RELEASE_PREVIOUS_VERSION": previous or "", "RELEASE_HOST": host, "RELEASE_ACTION": action,
        }

    async def command(self, host: str, script: str, env: dict[str, str], timeout: float) -> CommandResult:
        async with self._slots:
            return await self._run(host, script, env, timeout)

    async def launch(self, host: str, script: str, env: dict[str, str], timeout: float,
                     on_start: Callable[[], None]) -> CommandResult | None:
        """A step's own command; None if not started because the run began stopping while its
        intent was being written or while it waited for a slot."""
        async with self._slots:
            if self.stopping:
                return None
            on_start()
            return await self._run(host, script, env, timeout)

    async def _run(self, host: str, script: str, env: dict[str, str], timeout: float) -> CommandResult:
        try:
            return await self.transports[host].run(Command(script, env, timeout))
        except ReleaseError as exc:
            return CommandResult(None, error=str(exc))
        except OSError as exc:
            return CommandResult(None, error=f"host {host}: {exc}")

    async def health(self, spec: ServiceSpec, host: str, version: str | None, previous: str | None,
                     log: Any) -> CommandResult:
        assert spec.health
        env = self.env(spec, host, "health", version, previous)
        result = CommandResult(None, error="no health attempt")
        for attempt in range(spec.health_retries + 1):
            if attempt:
                await asyncio.sleep(spec.health_interval)
            result = await self.command(host, spec.health, env, spec.timeout)
            if result.ok:
                log.debug("health.ok", attempt=attempt + 1, stdout=result.stdout.strip())
                return result
            log.warning("health.failed", attempt=attempt + 1, of=spec.health_retries + 1, why=result.describe())
        return result

    # -- services ----------------------------------------------------------------------------

    async def roll(self, spec: ServiceSpec, hosts: list[str],
                   one: Callable[[str], Awaitable[bool]]) -> bool:
        """`max_parallel` hosts at a time, in inventory order; a failure stops the rollout."""
        gate = asyncio.Semaphore(spec.batch_size(len(self.project.hosts_of(spec))))
        broken = False

        async def guarded(host: str) -> bool:
            nonlocal broken
            async with gate:
                if broken or self.stopping:
                    self.reports.append(StepReport(spec.name, "service", host, "none", "skipped",
                                                   detail="rollout stopped"))
                    return False
                if not await one(host):
                    broken = True
                    return False
                return True

        results = await asyncio.gather(*(guarded(h) for h in hosts))
        return all(results)

    async def change_host(self, spec: ServiceSpec, host: str, *, action: str, script: str,
                          version: str | None, previous: str | None, check_health: bool) -> bool:
        """One journaled change on one host: intent, command, health, outcome."""
        log = self.log.bind(node=spec.name, host=host)
        self.faults.hit("before-intent", self.phase, spec.name, host)
        # Journal writes wait for fsync: off the loop, so other hosts' commands go on meanwhile;
        # awaited, so the intent is durable before the command starts.
        step_id = await asyncio.to_thread(
            self.journal.intent, self.release_id, phase=self.phase, node=spec.name, kind="service",
            host=host, action=action, before=previous, after=version)
        self.faults.hit("after-intent", self.phase, spec.name, host)
        t0 = time.monotonic()
        result = await self.launch(host, script, self.env(spec, host, action, version, previous), spec.timeout,
                                   lambda: log.info(f"{action}.start", version=version, previous=previous))
        if result is None:
            why = "not started: the run was stopping"
            await asyncio.to_thread(self.journal.outcome, step_id, SKIPPED, detail=why)
            self.reports.append(StepReport(spec.name, "service", host, action, "skipped", detail=why))
            log.info(f"{action}.not_started", why=why)
            return False
        # -v: what the command printed, also kept in the run's JSONL log and the journal.
        log.debug(f"{action}.output", exit_code=result.exit_code, stdout=result.stdout.strip(),
                  stderr=result.stderr.strip())
        detail = None if result.ok else f"{action} failed on {host}: {result.describe()}"
        if result.ok and check_health and spec.health:
            health = await self.health(spec, host, version, previous, log)
            if not health.ok:
                detail = f"health check failed on {host}: {health.describe()}"
                result = CommandResult(health.exit_code, result.stdout, health.stderr, result.duration,
                                       health.timed_out, health.error)
        self.faults.hit("after-command", self.phase, spec.name, host)
        ok = detail is None
        # Killed on the user's word: journaled as failed (revert undoes it, resume redoes it),
        # but not a failure of the release, which stays `interrupted` (SPEC §5).
        killed = not ok and self.killed
        if killed:
            detail = f"{action} on {host} killed by a second interrupt: {result.describe()}"
        elif not ok:  # before the outcome's fsync: a step waiting for this slot must see it
            self.fail(f"{spec.name} on {host}: {detail}")
        await asyncio.to_thread(
            self.journal.outcome, step_id, OK if ok else FAILED_STEP, exit_code=result.exit_code,
            stdout=result.stdout, stderr=result.stderr, detail=detail,
            in_place=(spec.name, host, version) if ok else None, release_id=self.release_id)
        self.faults.hit("after-outcome", self.phase, spec.name, host)
        duration = time.monotonic() - t0
        self.reports.append(StepReport(spec.name, "service", host, action, "ok" if ok else "failed",
                                       result.exit_code, duration, from_=previous, to=version, detail=detail))
        if ok:
            log.info(f"{action}.done", version=version, duration=round(duration, 3))
        elif killed:
            log.warning(f"{action}.killed", why=detail)
        else:
            log.error(f"{action}.failed", why=detail)
        return ok

    def deploy_job(self, spec: ServiceSpec, targets: list[str], version: str,
                   current: dict[str, str | None]) -> Callable[[], Awaitable[bool]]:
        async def job() -> bool:
            return await self.roll(spec, targets, lambda h: self.change_host(
                spec, h, action="deploy", script=spec.deploy, version=version, previous=current.get(h),
                check_health=True))
        return job

    def revert_job(self, spec: ServiceSpec, changes: list[HostChange]) -> Callable[[], Awaitable[bool]]:
        by_host = {c.host: c for c in changes}

        async def job() -> bool:
            # During a revert RELEASE_VERSION is what comes back and RELEASE_PREVIOUS_VERSION what
            # goes away; with nothing to come back, the command decides what "nothing" means.
            return await self.roll(spec, list(by_host), lambda h: self.change_host(
                spec, h, action="revert", script=spec.revert or spec.deploy, version=by_host[h].restore,
                previous=by_host[h].remove, check_health=by_host[h].restore is not None))
        return job

    # -- databases ---------------------------------------------------------------------------

    async def migrate(self, spec: DatabaseSpec, runner: migrations.MigrationRunner, target: str | None,
                      action: str) -> bool:
        """Hop by hop to `target`, each revision journaled and committed on its own."""
        log = self.log.bind(node=spec.name, host=None)
        heads = await migrations.in_worker(runner.current_heads)
        current = heads[0] if heads else None
        # Loading scripts takes Alembic's lock, held by a running revision: not on the loop.
        hops = await migrations.in_worker(runner.hops, current, target)
        for hop in hops:
            if self.stopping:
                self.reports.append(StepReport(spec.name, "database", None, action, "skipped",
                                               revision=hop.revision, detail="release stopping"))
                return False
            self.faults.hit("before-intent", self.phase, spec.name, hop.revision)
            step_id = await asyncio.to_thread(
                self.journal.intent, self.release_id, phase=self.phase, node=spec.name, kind="database",
                action=action, revision=hop.revision, before=hop.from_rev, after=hop.to_rev)
            self.faults.hit("after-intent", self.phase, spec.name, hop.revision)
            if self.stopping:  # it began while the intent was being written
                why = "not started: the run was stopping"
                await asyncio.to_thread(self.journal.outcome, step_id, SKIPPED, detail=why)
                self.reports.append(StepReport(spec.name, "database", None, action, "skipped",
                                               revision=hop.revision, detail=why))
                return False
            log.info(f"{action}.start", revision=hop.revision, direction=hop.direction)
            t0 = time.monotonic()
            try:
                await migrations.in_worker(runner.apply_hop, hop)
                detail = None
            except ReleaseError as exc:
                detail = str(exc)
            self.faults.hit("after-command", self.phase, spec.name, hop.revision)
            ok = detail is None
            if not ok:
                self.fail(f"{spec.name}: {detail}")
            await asyncio.to_thread(self.journal.outcome, step_id, OK if ok else FAILED_STEP, detail=detail)
            self.faults.hit("after-outcome", self.phase, spec.name, hop.revision)
            self.reports.append(StepReport(spec.name, "database", None, action, "ok" if ok else "failed",
                                           0 if ok else 1, time.monotonic() - t0, revision=hop.revision,
                                           from_=hop.from_rev, to=hop.to_rev, detail=detail))
            if not ok:
                log.error(f"{action}.failed", revision=hop.revision, why=detail)
                return False
            log.info(f"{action}.done", revision=hop.revision, duration=round(time.monotonic() - t0, 3))
        return True

    def migrate_job(self, spec: DatabaseSpec, target: str) -> Callable[[], Awaitable[bool]]:
        async def job() -> bool:
            runner = runner_for(self.project, spec)
            # Archived before the first intent: a crash after it still leaves the downgrade code.
            files = await migrations.in_worker(migrations.archive, runner.script_location)
            earlier = await asyncio.to_thread(self.journal.archived, self.release_id, spec.name)
            if earlier:  # a resumed apply: keep what the first attempt may have applied
                files = migrations.merge_archives(earlier, files)
            await asyncio.to_thread(self.journal.archive, self.release_id, spec.name, files)
            return await self.migrate(spec, runner, target, "migrate")
        return job

    def downgrade_job(self, spec: DatabaseSpec, restore: str | None, force: bool) -> Callable[[], Awaitable[bool]]:
        async def job() -> bool:
            files = self.journal.archived(self.release_id, spec.name)
            with tempfile.TemporaryDirectory(prefix=f"release-{spec.name}-") as tmp:
                location = migrations.restore(files, Path(tmp)) if files else None
                runner = runner_for(self.project, spec, location)
                heads = await migrations.in_worker(runner.current_heads)
                current = heads[0] if heads else None

                def irreversible() -> list[str]:
                    return [h.revision for h in runner.hops(current, restore)
                            if h.direction == "down" and not runner.is_reversible(h.revision)]

                blocked = await migrations.in_worker(irreversible)
                if blocked and force:
                    step_id = self.journal.intent(self.release_id, phase=self.phase, node=spec.name,
                                                  kind="database", action="skip", before=current, after=current)
                    why = f"--force: schema downgrade skipped; {', '.join(blocked)} has no working downgrade"
                    self.journal.outcome(step_id, OK, detail=why)
                    self.reports.append(StepReport(spec.name, "database", None, "skip", "ok", detail=why))
                    self.log.warning("downgrade.skipped", node=spec.name, why=why)
                    return True
                if blocked:
                    why = (f"revision {', '.join(blocked)} of {spec.name} has no working downgrade; the schema "
                           f"stays at {current}. `release revert --force` skips this downgrade")
                    self.reports.append(StepReport(spec.name, "database", None, "downgrade", "failed", 1,
                                                   detail=why))
                    self.fail(why)
                    return False
                return await self.migrate(spec, runner, restore, "downgrade")
        return job


def changes_to_revert(apply_steps: list[Step], revert_steps: list[Step]) -> tuple[
        dict[str, list[HostChange]], dict[str, str | None]]:
    """From a release's journal: what each host and database must get back.

    Every apply step counts, done, failed or in doubt (intent without outcome): it may have
    changed something. The first step of a pair keeps the version from before the release,
    even when the apply was resumed. Host reverts that already succeeded are not run again,
    unless the host was changed again after them (an apply resumed over a partial revert);
    databases are always probed (their actual heads decide what is left to downgrade).
    """
    reverted: dict[tuple[str, str | None], int] = {}
    for s in revert_steps:
        if s.kind == "service" and s.status == OK:
            reverted[(s.node, s.host)] = max(s.id, reverted.get((s.node, s.host), 0))
    services: dict[str, dict[str, HostChange]] = {}
    databases: dict[str, str | None] = {}
    for s in apply_steps:
        if s.status == SKIPPED:  # journaled, never started: nothing to undo
            continue
        if s.kind == "service":
            if s.id < reverted.get((s.node, s.host), 0):
                continue
            hosts = services.setdefault(s.node, {})
            if s.host in hosts:
                hosts[s.host].remove = s.after
            else:
                hosts[s.host] = HostChange(s.node, s.host, s.before, s.after)
        elif s.node not in databases:
            databases[s.node] = s.before
    return {n: list(h.values()) for n, h in services.items()}, databases
