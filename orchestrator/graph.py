"""The dependency graph: nodes are services and databases, edges go dependency -> dependent."""

from __future__ import annotations

import shutil
import subprocess

import networkx as nx

from .errors import InputError, ReleaseError
from .manifests import Project


def build_graph(project: Project) -> nx.DiGraph:
    """The graph of a loaded project; a cycle is refused with the cycle and its files."""
    g = nx.DiGraph()
    for name, spec in project.nodes.items():
        g.add_node(name, kind=spec.kind)
    for name, spec in project.nodes.items():
        for dep in spec.depends_on:
            g.add_edge(dep, name)
    if nx.is_directed_acyclic_graph(g):  # linear; find_cycle is far slower on a big graph with none
        return g
    cycle = nx.find_cycle(g)
    # find_cycle gives edges dependency -> dependent; print it the way depends_on reads.
    names = [cycle[0][0]] + [v for _, v in cycle]
    names.reverse()
    files = sorted({project.files[n] for n in names})
    raise InputError(
        "invalid manifests",
        problems=[f"{', '.join(files)}: depends_on: cycle {' -> '.join(names)}"],
    )


def with_downgrades(g: nx.DiGraph, down: set[str], changing: set[str]) -> nx.DiGraph:
    """The order of a release in which databases go down: such a database runs after every node
    that depends on it and changes in the same release (services that expect the newer schema
    are rolled back first), and no longer holds its dependents back. Reversed for its revert,
    the database goes back up first."""
    if not down:
        return g
    h = g.copy()
    for db in down:
        h.remove_edges_from(list(g.out_edges(db)))
        h.add_edges_from((d, db) for d in nx.descendants(g, db) & changing)
    if not nx.is_directed_acyclic_graph(h):
        raise InputError(f"databases {', '.join(sorted(down))} go down while others that depend on them "
                         "go up: split this release in two")
    return h


def waves(g: nx.DiGraph) -> list[list[str]]:
    """Topological generations, databases first within a wave, names sorted for stable output."""
    return [sorted(gen, key=lambda n: (g.nodes[n]["kind"] != "database", n)) for gen in nx.topological_generations(g)]


def order(g: nx.DiGraph) -> list[str]:
    return [n for wave in waves(g) for n in wave]


def to_text(g: nx.DiGraph) -> str:
    lines = []
    for i, wave in enumerate(waves(g), 1):
        lines.append(f"wave {i}:")
        for n in wave:
            deps = sorted(g.predecessors(n))
            kind = g.nodes[n]["kind"]
            lines.append(f"  {n} ({kind})" + (f" <- {', '.join(deps)}" if deps else ""))
    return "\n".join(lines)


def to_dot(g: nx.DiGraph) -> str:
    lines = ["digraph release {", "  rankdir=LR;"]
    for i, wave in enumerate(waves(g), 1):
        lines.append(f'  subgraph cluster_{i} {{ label="wave {i}"; style=dashed;')
        for n in wave:
            shape = "cylinder" if g.nodes[n]["kind"] == "database" else "box"
            lines.append(f'    "{n}" [shape={shape}];')
        lines.append("  }")
    for a, b in sorted(g.edges):
        lines.append(f'  "{a}" -> "{b}";')
    lines.append("}")
    return "\n".join(lines)


def to_mermaid(g: nx.DiGraph) -> str:
    ids = {n: f"n{i}" for i, n in enumerate(order(g))}
    lines = ["flowchart LR"]
    for i, wave in enumerate(waves(g), 1):
        lines.append(f'  subgraph w{i}["wave {i}"]')
        for n in wave:
            shape = f'[("{n}")]' if g.nodes[n]["kind"] == "database" else f'["{n}"]'
            lines.append(f"    {ids[n]}{shape}")
        lines.append("  end")
    for a, b in sorted(g.edges):
        lines.append(f"  {ids[a]} --> {ids[b]}")
    return "\n".join(lines)



def to_image(g: nx.DiGraph, fmt: str) -> bytes:
    """An svg or png picture, drawn by Graphviz's `dot` from `to_dot`."""
    exe = shutil.which("dot")
    if exe is None:
        raise InputError(f"--format {fmt} needs Graphviz's `dot` (apt-get install graphviz)")
    done = subprocess.run([exe, f"-T{fmt}"], input=to_dot(g).encode(), capture_output=True)
    if done.returncode != 0:
        raise ReleaseError(f"Graphviz's dot failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def render(g: nx.DiGraph, fmt: str) -> str | bytes:
    texts = {"text": to_text, "dot": to_dot, "mermaid": to_mermaid}
    if fmt in texts:
        return texts[fmt](g)
    if fmt in ("svg", "png"):
        return to_image(g, fmt)
    raise InputError(f"unknown graph format {fmt!r}: use text, dot, mermaid, svg or png")
