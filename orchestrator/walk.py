"""A generic walk over a dependency graph (after Terraform's dag walker): no journal, no I/O.

Each node's callback starts as soon as every node it depends on finished successfully, not wave
by wave. Reversed, a node starts once everything that depends on it is done (revert order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import networkx as nx

Visit = Callable[[str], Awaitable[bool]]
Blocked = Callable[[str, list[str]], None]
Crashed = Callable[[str, BaseException], None]


def _ignore_blocked(node: str, failed: list[str]) -> None:
    pass


def _ignore_crash(node: str, exc: BaseException) -> None:
    pass


async def walk(graph: nx.DiGraph, visit: Visit, *, reverse: bool = False,
               on_blocked: Blocked = _ignore_blocked, on_crash: Crashed = _ignore_crash) -> dict[str, bool]:
    """Visit every node in dependency order; returns whether each node succeeded.

    A node whose dependency failed is not visited: it counts as failed and `on_blocked` hears of
    it with the dependencies that failed. An exception in `visit` fails that node only (a bug in
    one node must not hang its dependents) and is handed to `on_crash`.
    """
    done = {n: asyncio.Event() for n in graph}
    ok: dict[str, bool] = {}

    async def run(node: str) -> None:
        deps = list(graph.successors(node) if reverse else graph.predecessors(node))
        try:
            for d in deps:
                await done[d].wait()
            failed = [d for d in deps if not ok[d]]
            if failed:
                ok[node] = False
                on_blocked(node, failed)
            else:
                ok[node] = await visit(node)
        except Exception as exc:  # noqa: BLE001 - reported through on_crash
            ok[node] = False
            on_crash(node, exc)
        finally:
            done[node].set()

    await asyncio.gather(*(run(n) for n in graph))
    return ok
