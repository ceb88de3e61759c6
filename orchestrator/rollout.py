"""A service's rollout over its hosts: `max_parallel` hosts at a time in inventory order, a
health gate after each host, every host change a journaled step; a failure stops the rollout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .environment import command_env
from .errors import ReleaseError
from .manifests import Project, ServiceSpec
from .probes import ProbeFailed, read_version
from .steps import Run, StepIntent, StepReport, StepResult
from .transports.base import Command, CommandResult, Transport

Job = Callable[[], Awaitable[bool]]


@dataclass
class HostChange:
    """What revert must restore on one host of one service, from the apply steps of a release."""

    node: str
    host: str
    restore: str | None  # the version before the release; None: there was none
    remove: str | None  # the version the release put (or may have put) in place


class Rollout:
    def __init__(self, run: Run, project: Project, transports: Mapping[str, Transport]) -> None:
        self.run = run
        self.project = project
        self.transports = transports

    def env(self, spec: ServiceSpec, host: str, action: str, version: str | None,
            previous: str | None) -> dict[str, str]:
        return command_env(release=self.run.release, service=spec.name, host=host, action=action,
                           version=version, previous=previous,
                           transport_env=self.transports[host].environment())

    async def _exec(self, host: str, script: str, env: dict[str, str], timeout: float) -> CommandResult:
        try:
            return await self.transports[host].run(Command(script, env, timeout))
        except ReleaseError as exc:
            return CommandResult(None, error=str(exc))
        except OSError as exc:
            return CommandResult(None, error=f"host {host}: {exc}")

    async def command(self, host: str, script: str, env: dict[str, str], timeout: float) -> CommandResult:
        """A command that is not a step of its own (a health check): it still takes a slot."""
        async with self.run.slots:
            return await self._exec(host, script, env, timeout)

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

    async def verify(self, spec: ServiceSpec, host: str, action: str, expected: str | None,
                     previous: str | None) -> str | None:
        """Why the host does not now report `expected` (None: it does). A command that exits 0
        but changed nothing is a failed step, not a success."""
        try:
            async with self.run.slots:
                reported = await read_version(self.transports[host], spec, host, self.run.release)
        except ProbeFailed as exc:
            return f"{action} succeeded but {exc}"
        if reported == expected:
            return None
        still = "still " if reported == previous else ""
        return (f"{spec.name}@{host}: {action} succeeded but the host {still}reports {reported or 'nothing'}, "
                f"expected {expected or 'nothing'}")

    async def roll(self, spec: ServiceSpec, hosts: list[str], one: Callable[[str], Awaitable[bool]],
                   watch: Callable[[list[str], str], Awaitable[bool]] | None = None) -> bool:
        """`max_parallel` hosts at a time, in inventory order; a failure stops the rollout. With
        `watch` (a deploy), the canary hosts go first and are watched before the rest start,
        and the whole rollout is watched after its last host."""
        gate = asyncio.Semaphore(spec.batch_size(len(self.project.hosts_of(spec))))
        broken = False

        async def guarded(host: str) -> bool:
            nonlocal broken
            async with gate:
                if broken or self.run.stopping:
                    self.run.skipped(spec.name, "service", "rollout stopped", host=host)
                    return False
                if not await one(host):
                    broken = True
                    return False
                return True

        async def batch(group: list[str]) -> bool:
            return all(await asyncio.gather(*(guarded(h) for h in group)))

        n = spec.canary_size(len(hosts)) if watch is not None else 0
        canary, rest = hosts[:n], hosts[n:]
        if canary and not (await batch(canary) and await watch(canary, "canary")):  # type: ignore[misc]
            broken = True  # the hosts not yet touched stay as they were
        ok = await batch(rest) and not broken
        if ok and watch is not None and rest:
            ok = await watch(hosts, "rollout")
        return ok

    async def soak(self, spec: ServiceSpec, hosts: list[str], stage: str, version: str,
                   current: dict[str, str | None]) -> bool:
        """Keep watching `hosts` for `spec.soak` seconds, a health check every `health_interval`:
        the post-deploy monitoring that stops a bad version before it reaches every host."""
        if not spec.soak:
            return True
        log = self.run.log.bind(node=spec.name, host=None)
        interval = spec.health_interval or 1.0
        t0 = asyncio.get_running_loop().time()
        log.info("soak.begin", stage=stage, hosts=",".join(hosts), seconds=spec.soak)
        while True:
            elapsed = asyncio.get_running_loop().time() - t0
            if self.run.stopping:
                return False
            if spec.health:
                results = await asyncio.gather(*(self.command(
                    h, spec.health, self.env(spec, h, "health", version, current.get(h)), spec.timeout)
                    for h in hosts))
                bad = [(h, r) for h, r in zip(hosts, results) if not r.ok]
                if bad:
                    h, r = bad[0]
                    why = (f"health check failed on {h} while soaking ({stage}, {elapsed:.0f}/{spec.soak:g} s): "
                           f"{r.describe()}")
                    self.run.fail(f"{spec.name}: {why}")
                    self.run.reports.append(StepReport(spec.name, "service", h, "soak", "failed", r.exit_code,
                                                       elapsed, to=version, detail=why))
                    log.error("soak.failed", host=h, why=why)
                    return False
            log.info("soak.progress", stage=stage, message=f"soaking {min(elapsed, spec.soak):.0f}/{spec.soak:g} s")
            if elapsed >= spec.soak:
                break
            await asyncio.sleep(min(interval, spec.soak - elapsed))
        log.info("soak.end", stage=stage)
        return True

    async def change_host(self, spec: ServiceSpec, host: str, *, action: str, script: str,
                          version: str | None, previous: str | None, check_health: bool) -> bool:
        """One journaled change on one host: intent, command, health, outcome."""
        log = self.run.log.bind(node=spec.name, host=host)
        env = self.env(spec, host, action, version, previous)

        async def start() -> CommandResult:
            return await self._exec(host, script, env, spec.timeout)

        async def finish(result: CommandResult) -> StepResult:
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
            if detail is None and spec.current:
                detail = await self.verify(spec, host, action, version, previous)
            killed = detail is not None and self.run.killed
            if killed:
                detail = f"{action} on {host} killed by a second interrupt: {result.describe()}"
            return StepResult(detail is None, result.exit_code, result.stdout, result.stderr, detail,
                              killed=killed, in_place=True)

        intent = StepIntent(spec.name, "service", action, host=host, before=previous, after=version)
        return await self.run.step(intent, start, finish, gate=self.run.slots, version=version, previous=previous)

    def deploy_job(self, spec: ServiceSpec, targets: list[str], version: str,
                   current: dict[str, str | None]) -> Job:
        async def watch(hosts: list[str], stage: str) -> bool:
            return await self.soak(spec, hosts, stage, version, current)

        async def job() -> bool:
            return await self.roll(spec, targets, lambda h: self.change_host(
                spec, h, action="deploy", script=spec.deploy, version=version, previous=current.get(h),
                check_health=True), watch)
        return job

    def revert_job(self, spec: ServiceSpec, changes: list[HostChange]) -> Job:
        by_host = {c.host: c for c in changes}

        async def job() -> bool:
            # With nothing to come back, the command decides what "nothing" means; no health check.
            return await self.roll(spec, list(by_host), lambda h: self.change_host(
                spec, h, action="revert", script=spec.revert or spec.deploy, version=by_host[h].restore,
                previous=by_host[h].remove, check_health=by_host[h].restore is not None))
        return job
