"""The graph walker on bare in-memory graphs: order, early start, failure propagation; no I/O."""

from __future__ import annotations

import asyncio

import networkx as nx

from orchestrator.walk import walk


def diamond() -> nx.DiGraph:
    # db -> a, db -> b, a -> web, b -> web (edges go dependency -> dependent)
    return nx.DiGraph([("db", "a"), ("db", "b"), ("a", "web"), ("b", "web")])


async def test_forward_order_starts_each_node_after_its_dependencies() -> None:
    events: list[tuple[str, str]] = []

    async def visit(node: str) -> bool:
        events.append(("start", node))
        await asyncio.sleep(0.01 if node == "a" else 0)
        events.append(("end", node))
        return True

    ok = await walk(diamond(), visit)
    assert ok == {"db": True, "a": True, "b": True, "web": True}
    pos = {e: i for i, e in enumerate(events)}
    for dep, node in diamond().edges:
        assert pos[("end", dep)] < pos[("start", node)]


async def test_reverse_order_starts_dependencies_last() -> None:
    started: list[str] = []

    async def visit(node: str) -> bool:
        started.append(node)
        return True

    await walk(diamond(), visit, reverse=True)
    assert started[0] == "web" and started[-1] == "db"


async def test_a_node_starts_as_soon_as_its_own_dependencies_are_done_not_its_wave() -> None:
    # fast -> after_fast; slow is in the first wave too, but after_fast must not wait for it.
    g = nx.DiGraph([("fast", "after_fast"), ("slow", "after_slow")])
    release_slow = asyncio.Event()
    started: list[str] = []

    async def visit(node: str) -> bool:
        started.append(node)
        if node == "slow":
            await release_slow.wait()
        if node == "after_fast":
            release_slow.set()  # would deadlock if after_fast waited for slow's wave
        return True

    ok = await asyncio.wait_for(walk(g, visit), 5)
    assert all(ok.values())
    assert started.index("after_fast") < started.index("after_slow")


async def test_a_failure_blocks_only_its_dependents() -> None:
    g = nx.DiGraph([("db", "a"), ("db", "b"), ("a", "web"), ("other", "lonely")])
    visited: list[str] = []
    blocked: dict[str, list[str]] = {}

    async def visit(node: str) -> bool:
        visited.append(node)
        return node != "a"

    ok = await walk(g, visit, on_blocked=lambda n, failed: blocked.setdefault(n, failed))
    assert ok == {"db": True, "a": False, "b": True, "web": False, "other": True, "lonely": True}
    assert "web" not in visited
    assert blocked == {"web": ["a"]}


async def test_a_crash_fails_that_node_and_its_dependents_without_hanging() -> None:
    g = nx.DiGraph([("a", "b"), ("c", "d")])
    crashes: list[tuple[str, str]] = []

    async def visit(node: str) -> bool:
        if node == "a":
            raise RuntimeError("boom")
        return True

    ok = await asyncio.wait_for(walk(g, visit, on_crash=lambda n, e: crashes.append((n, str(e)))), 5)
    assert ok == {"a": False, "b": False, "c": True, "d": True}
    assert crashes == [("a", "boom")]
