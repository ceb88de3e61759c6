"""Asking the hosts what really runs: a service's `current` command, read-only.

The journal is this checkout's memory, not the world: a CI runner or a colleague's clone has a
journal of its own, and hosts change by hand. What `current` prints is the version running on a
host; empty output or a non-zero exit means nothing runs there. A host that cannot be asked at
all (unreachable, timed out) is an error naming it, never taken for "nothing".
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from .environment import command_env
from .errors import ReleaseError
from .manifests import Project, ServiceSpec
from .plan import runner_for
from .transports import TransportFactory
from .transports.base import Command, Transport

PROBE_ACTION = "current"


class ProbeFailed(ReleaseError):
    """A host could not be asked what runs there (exit 1)."""


def parse(stdout: str) -> str | None:
    """The version a probe printed: its last non-empty line, stripped; None when it printed none."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    return lines[-1] if lines else None


async def read_version(transport: Transport, spec: ServiceSpec, host: str, release: str) -> str | None:
    """What `spec.current` reports on `host`. Raises ProbeFailed when the host cannot be asked."""
    assert spec.current
    if not transport.has_state():
        return None  # never set up: nothing runs there, and asking would create it
    env = command_env(release=release, service=spec.name, host=host, action=PROBE_ACTION, version=None,
                      previous=None, transport_env=transport.environment())
    try:
        result = await transport.run(Command(spec.current, env, spec.timeout))
    except (ReleaseError, OSError) as exc:
        raise ProbeFailed(f"{spec.name}@{host}: cannot read the running version: {exc}") from None
    if result.error or result.timed_out:
        raise ProbeFailed(f"{spec.name}@{host}: cannot read the running version: {result.describe()}")
    return parse(result.stdout) if result.exit_code == 0 else None


async def read_all(project: Project, transports: Mapping[str, Transport], services: Iterable[ServiceSpec],
                   release: str, parallelism: int, *, tolerant: bool = False) -> tuple[
                       dict[str, dict[str, str | None]], list[str]]:
    """Every probe of `services` on every host of theirs, `parallelism` at a time (the transports
    keep their own per-host limits). A host that cannot be asked fails the whole read, naming
    every such host at once; `tolerant` reads it as None and returns the problems instead."""
    slots = asyncio.Semaphore(max(1, parallelism))
    todo = [(spec, host) for spec in services if spec.current for host in project.hosts_of(spec)]

    async def one(spec: ServiceSpec, host: str) -> str | None:
        async with slots:
            return await read_version(transports[host], spec, host, release)

    results = await asyncio.gather(*(one(s, h) for s, h in todo), return_exceptions=True)
    out: dict[str, dict[str, str | None]] = {}
    problems = []
    for (spec, host), r in zip(todo, results):
        if isinstance(r, ProbeFailed):
            problems.append(r.message)
            out.setdefault(spec.name, {})[host] = None
        elif isinstance(r, BaseException):
            raise r
        else:
            out.setdefault(spec.name, {})[host] = r
    if problems and not tolerant:
        raise ProbeFailed("cannot read what runs on every host; nothing was changed", problems=problems)
    return out, problems


def probed_hosts(project: Project, services: Iterable[ServiceSpec]) -> list[str]:
    return sorted({h for s in services if s.current for h in project.hosts_of(s)})


def read_live(project: Project, release: str, factory: TransportFactory, parallelism: int = 16,
              *, tolerant: bool = False) -> tuple[dict[str, dict[str, str | None]], list[str]]:
    """`read_all` for every service with a `current` probe, over transports of its own."""
    services = [s for s in project.services.values() if s.current]
    if not services:
        return {}, []

    async def go() -> tuple[dict[str, dict[str, str | None]], list[str]]:
        async with factory(project, probed_hosts(project, services)) as pool:
            return await read_all(project, pool, services, release, parallelism, tolerant=tolerant)

    return asyncio.run(go())


def read_state(project: Project, journaled: dict[str, dict[str, str]], warnings: list[str],
               parallelism: int, factory: TransportFactory) -> dict[str, Any]:
    """`status --live`: what the probes and the databases report, and where the journal differs.
    Nothing here fails the command: an unreachable host or database reads None, with a warning."""
    live, problems = read_live(project, "status", factory, parallelism, tolerant=True)
    warnings.extend(problems)
    drift = [{"node": node, "host": host, "journal": journaled.get(node, {}).get(host), "live": version}
             for node, hosts in live.items() for host, version in hosts.items()
             if version != journaled.get(node, {}).get(host) and not _unreachable(node, host, problems)]
    databases: dict[str, str | None] = {}
    for name, spec in project.databases.items():
        try:
            heads = runner_for(project, spec).current_heads()
            databases[name] = ",".join(heads) or None  # several heads: "a,b", as Alembic writes them
        except ReleaseError as exc:
            databases[name] = None
            warnings.append(f"{name}: {exc.message}")
    return {"live": live, "drift": drift, "live_databases": databases}


def _unreachable(node: str, host: str, problems: list[str]) -> bool:
    return any(p.startswith(f"{node}@{host}:") for p in problems)
