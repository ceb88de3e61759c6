"""The live terminal view of a run: each node's state, its hosts, and what it still waits on.

Fed by the same structured log events that go to the JSONL file; only used on a terminal.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import networkx as nx
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from .terminal import printable

STYLE = {"waiting": "dim", "running": "yellow", "done": "green", "failed": "bold red", "skipped": "magenta",
         "nothing to do": "dim"}


def wanted(log_format: str) -> bool:
    return log_format == "console" and sys.stderr.isatty() and not os.environ.get("NO_COLOR")


class LiveView:
    def __init__(self, graph: nx.DiGraph, jobs: set[str], reverse: bool, title: str) -> None:
        self.graph = graph
        self.reverse = reverse
        self.title = title
        self.state = {n: "waiting" if n in jobs else "nothing to do" for n in graph}
        self.hosts: dict[str, dict[str, str]] = {n: {} for n in graph}
        self.notes: dict[str, str] = {}  # e.g. "soaking 12/30 s" while a rollout is watched
        self.console = Console(stderr=True)
        self.live = Live(self.render(), console=self.console, refresh_per_second=8, transient=False)

    def deps(self, node: str) -> list[str]:
        return list(self.graph.successors(node) if self.reverse else self.graph.predecessors(node))

    def handle(self, event: dict[str, Any]) -> None:
        name, node, host = event.get("event", ""), event.get("node"), event.get("host")
        if node not in self.state:
            return
        kind = name.rsplit(".", 1)[-1]
        where = host or event.get("revision") or node
        if kind == "start":
            self.state[node] = "running"
            self.hosts[node][where] = "running"
        elif kind == "done":
            self.hosts[node][where] = "done"
            if all(v == "done" for v in self.hosts[node].values()):
                self.state[node] = "done"
        elif kind == "skipped":
            self.state[node] = "done"
            self.hosts[node][where] = "skipped"
        elif kind in ("failed", "killed") and not name.startswith("health"):
            self.hosts[node][where] = "failed"
            self.state[node] = "failed"
        elif name == "soak.progress":
            self.notes[node] = str(event.get("message", ""))
        elif name == "soak.end":
            self.notes.pop(node, None)
        elif name == "node.not_started":
            self.state[node] = "skipped"
        self.live.update(self.render())

    def render(self) -> Table:
        table = Table(title=self.title, title_justify="left", expand=False)
        for col in ("node", "state", "hosts / revisions", "waits on"):
            table.add_column(col)
        order = list(nx.topological_sort(self.graph))
        for node in reversed(order) if self.reverse else order:
            st = self.state[node]
            waits = [d for d in self.deps(node) if self.state[d] not in ("done", "nothing to do")]
            hosts = " ".join(f"[{STYLE[s]}]{_cell(h)}[/]" for h, s in self.hosts[node].items())
            note = ", ".join(waits) if st == "waiting" else self.notes.get(node, "")
            table.add_row(_cell(node), f"[{STYLE[st]}]{st}[/]", hosts, _cell(note))
        return table

    def print(self, text: str) -> None:
        self.live.console.print(printable(text), markup=False, highlight=False)

    def __enter__(self) -> "LiveView":
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.update(self.render())
        self.live.stop()


def _cell(text: str) -> str:
    """A revision id or a note as table text: Rich passes escape sequences through, and reads
    "[...]" as markup."""
    return escape(printable(text))
