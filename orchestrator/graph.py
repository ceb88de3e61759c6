"""The dependency graph: nodes are services and databases, edges go dependency -> dependent."""

from __future__ import annotations

import networkx as nx

from .errors import InputError
from .manifests import Project


def build_graph(project: Project) -> nx.DiGraph:
    """The graph of a loaded project; a cycle is refused with the cycle and its files."""
    g = nx.DiGraph()
    for name, spec in project.nodes.items():
        g.add_node(name, kind=spec.kind)
    for name, spec in project.nodes.items():
        for dep in spec.depends_on:
            g.add_edge(dep, name)
    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return g
    # find_cycle gives edges dependency -> dependent; print it the way depends_on reads.
    names = [cycle[0][0]] + [v for _, v in cycle]
    names.reverse()
    files = sorted({project.files[n] for n in names})
    raise InputError(
        "invalid manifests",
        problems=[f"{', '.join(files)}: depends_on: cycle {' -> '.join(names)}"],
    )


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

