"""What watches over a run while its walk goes on: Ctrl-C and SIGTERM, the lock's heartbeat, and
the live terminal view.

First interrupt: nothing new starts, running commands finish. Second: they are killed.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import networkx as nx

from .journal import Journal
from .lifecycle import Phase
from .logs import attach_view, log_format
from .steps import Run
from .transports.base import Transport

HEARTBEAT_EVERY = 10.0


def _install_signals(run: Run, transports: Mapping[str, Transport]) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()
    hits = 0

    def on_signal(signame: str) -> None:
        nonlocal hits
        hits += 1
        if hits == 1:
            run.log.warning("interrupt", signal=signame,
                            message="no new steps start; running commands finish (again to kill them)")
            run.stop.set()
        else:
            run.log.warning("interrupt.kill", signal=signame, message="killing running commands")
            run.killed = True
            for t in transports.values():
                t.kill_running()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    return installed


async def _heartbeat(run: Run, journal: Journal) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_EVERY)
        try:
            ours = await asyncio.to_thread(journal.lock.heartbeat)
        except Exception as exc:  # noqa: BLE001 - a missed beat must not end the heartbeat
            run.log.warning("lock.heartbeat_failed", error=str(exc))
            continue
        if not ours and not run.stop.is_set():
            # Someone removed our lock: another run may start, so start nothing more.
            run.log.error("lock.lost", message="the release lock was removed; no new steps start")
            run.stop.set()


async def supervise(run: Run, graph: nx.DiGraph, jobs: set[str], transports: Mapping[str, Transport],
                    walk: Callable[[], Awaitable[Any]]) -> Any:
    """Run `walk()` with signal handling, the lock's heartbeat and (on a terminal) the live view."""
    from .view import LiveView, wanted

    installed = _install_signals(run, transports)
    beater = asyncio.create_task(_heartbeat(run, run.journal))
    try:
        if not wanted(log_format()):
            return await walk()
        title = f"release {run.release}: {run.phase}"
        with LiveView(graph, jobs, run.phase == Phase.REVERT, title) as view:
            attach_view(view)
            try:
                return await walk()
            finally:
                attach_view(None)
    finally:
        beater.cancel()
        loop = asyncio.get_running_loop()
        for sig in installed:
            loop.remove_signal_handler(sig)
