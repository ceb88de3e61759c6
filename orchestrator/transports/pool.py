"""TEMPORARY stand-in until the plugin pool lands."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping

from ..errors import HostUnreachable
from .base import Transport


class TransportPool(Mapping[str, Transport]):
    def __init__(self, transports: dict[str, Transport]) -> None:
        self._t = dict(transports)

    def __getitem__(self, host: str) -> Transport:
        return self._t[host]

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    async def preflight(self) -> None:
        results = await asyncio.gather(*(t.connect() for t in self._t.values()), return_exceptions=True)
        bad = [f"{name}: {r}" for name, r in zip(self._t, results) if isinstance(r, BaseException)]
        if bad:
            raise HostUnreachable("cannot reach every host; nothing was changed", problems=bad)

    def kill_running(self) -> None:
        for t in self._t.values():
            t.kill_running()

    async def __aenter__(self) -> "TransportPool":
        return self

    async def __aexit__(self, *exc: object) -> None:
        def depth(t: Transport) -> int:
            n, hop = 0, getattr(t, "jump", None)
            while hop is not None and n <= len(self._t):
                n, hop = n + 1, getattr(hop, "jump", None)
            return n

        levels: dict[int, list[Transport]] = {}
        for t in self._t.values():
            levels.setdefault(depth(t), []).append(t)
        for level in sorted(levels, reverse=True):
            await asyncio.gather(*(t.close() for t in levels[level]), return_exceptions=True)
