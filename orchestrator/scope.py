"""A release's scope: `--target NODE` (that node and what it depends on) and `--limit HOST`
(those hosts or groups). What a scoped plan leaves out is listed as `excluded` steps; the scope
is recorded with the release, and its revert undoes exactly the steps that ran."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:  # the CLI builds a Scope at start-up: no networkx, no pydantic for that
    import networkx as nx

    from .manifests import Project

EXCLUDED = "excluded"


@dataclass(frozen=True)
class Scope:
    targets: tuple[str, ...] = ()
    limit: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.targets or self.limit)

    def to_json(self) -> dict[str, list[str]]:
        return {"target": list(self.targets), "limit": list(self.limit)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "Scope":
        data = data or {}
        return cls(tuple(data.get("target") or ()), tuple(data.get("limit") or ()))

    def nodes(self, project: Project, g: nx.DiGraph) -> set[str] | None:
        """The nodes a release may change: the targets and everything they depend on."""
        if not self.targets:
            return None
        unknown = [t for t in self.targets if t not in project.nodes]
        if unknown:
            raise InputError(f"--target names unknown node(s): {', '.join(unknown)}")
        import networkx as nx

        return set(self.targets).union(*(nx.ancestors(g, t) for t in self.targets))

    def hosts(self, project: Project) -> set[str] | None:
        """The hosts a release may change (groups expanded); None: every host."""
        if not self.limit:
            return None
        inv = project.inventory
        unknown = [h for h in self.limit if h not in inv.hosts and h not in inv.groups]
        if unknown:
            raise InputError(f"--limit names unknown host(s) or group(s): {', '.join(unknown)}")
        return {h for ref in self.limit for h in inv.groups.get(ref, [ref])}


def narrow(steps: list[Any], scope: Scope, project: Project, g: nx.DiGraph, quiet: tuple[str, ...]) -> list[Any]:
    """The plan's steps with what the scope leaves out turned into `excluded` steps. A service
    left out on some of its hosts keeps its step for the others and gets an `excluded` step
    naming the rest. With --limit, databases (on no host) are left out unless targeted.
    `quiet` lists the actions that change nothing (they stay as they are)."""
    nodes, hosts = scope.nodes(project, g), scope.hosts(project)
    out = []
    for step in steps:
        if step.action in quiet:
            out.append(step)
            continue
        in_nodes = nodes is None or step.node in nodes
        if step.kind == "database":
            keep = in_nodes and (hosts is None or step.node in scope.targets)
            out.append(step if keep else replace(step, action=EXCLUDED))
            continue
        kept = [h for h in step.targets if in_nodes and (hosts is None or h in hosts)]
        left = [h for h in step.targets if h not in kept]
        if kept:
            out.append(replace(step, targets=kept))
        if left:
            out.append(replace(step, action=EXCLUDED, targets=left, hosts=left, warnings=[]))
    return out
