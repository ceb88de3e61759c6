"""The transports of one run: built through the registry, connected at once, closed in order.

    async with make_pool(project, hosts) as pool:
        await pool.preflight()
        result = await pool[host].run(command)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Self

from ..errors import HostUnreachable
from . import registry
from .base import Transport

if TYPE_CHECKING:
    from ..manifests import Project

MAX_HANDSHAKES = 10  # stock sshd MaxStartups


class TransportPool(Mapping[str, Transport]):
    """A read-only mapping of host name to transport, and the async context manager that closes
    them all. It holds what the hosts depend on too (a jump host), so those are connected and
    closed with the rest."""

    def __init__(self, transports: dict[str, Transport]) -> None:
        self._transports = dict(transports)

    def __getitem__(self, host: str) -> Transport:
        return self._transports[host]

    def __iter__(self) -> Iterator[str]:
        return iter(self._transports)

    def __len__(self) -> int:
        return len(self._transports)

    async def preflight(self) -> None:
        """Connect to every host before the first change: one that fails refuses the whole run."""
        results = await asyncio.gather(*(t.connect() for t in self.values()), return_exceptions=True)
        bad = [f"{name}: {r}" for name, r in zip(self, results) if isinstance(r, BaseException)]
        if bad:
            raise HostUnreachable("cannot reach every host; nothing was changed", problems=bad)

    def kill_running(self) -> None:
        for t in self.values():
            t.kill_running()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every transport before those it depends on, each level at once: a kill still
        under way on a host behind a jump host needs the tunnel until it is done."""
        levels: dict[int, list[Transport]] = {}
        for t in self.values():
            levels.setdefault(self._depth(t), []).append(t)
        for level in sorted(levels, reverse=True):
            await asyncio.gather(*(t.close() for t in levels[level]), return_exceptions=True)

    def _depth(self, transport: Transport, hops: int = 0) -> int:
        """How many transports deep `transport` depends; bounded, should a plugin make a loop."""
        deps = transport.dependencies()
        if not deps or hops > len(self):
            return 0
        return 1 + max(self._depth(d, hops + 1) for d in deps)


TransportFactory = Callable[["Project", list[str]], TransportPool]


def make_pool(project: Project, hosts: list[str]) -> TransportPool:
    """A transport for each host named, and for each host they depend on, made by the plugin its
    `transport:` names; they share the run's handshake cap."""
    built: dict[str, Transport] = {}

    def lookup(name: str) -> Transport:
        if name not in built:
            spec = project.inventory.hosts[name]
            built[name] = registry.plugin(spec.transport).create(name, spec.settings, context)
        return built[name]

    context = registry.TransportContext(project.root, asyncio.Semaphore(MAX_HANDSHAKES), lookup)
    for host in hosts:
        lookup(host)
    return TransportPool(built)
