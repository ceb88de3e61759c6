"""The benchmark's workloads, generated from a seed, and their lower bounds.

A workload is a graph of services: each runs one `sleep D` step on each of its hosts (all of them
at once, `max_parallel: "100%"`) and starts when every service it depends on is done on every host.
The same `Workload` is written as a `release` project (`write_project`), as JSON for the floor
walker (`to_json`), as an Ansible playbook and as a pyinfra deploy (see `ansible.py`, `pyinfra.py`).

This module imports no part of `orchestrator`: the benchmark drives `release` as a command.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

MAX_CHANNELS = 8  # commands at once per host, for release and the floor (docs/ssh.md)
MAX_HANDSHAKES = 10


@dataclass
class Service:
    name: str
    hosts: list[str]
    deps: list[str]
    duration: float  # seconds of `sleep` on each host


@dataclass
class Workload:
    key: str  # a, b, c, d1250 ...
    title: str
    hosts: list[str]
    services: list[Service]
    parallelism: int = 16  # `release apply --parallelism`, and the floor's cap
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> Workload:
        return cls(**{**d, "services": [Service(**s) for s in d["services"]]})

    # -- shape ------------------------------------------------------------------------------

    def graph(self) -> nx.DiGraph:
        g = nx.DiGraph()
        for s in self.services:
            g.add_node(s.name)
            g.add_edges_from((d, s.name) for d in s.deps)
        return g

    def waves(self) -> list[list[str]]:
        return [sorted(w) for w in nx.topological_generations(self.graph())]

    @property
    def host_steps(self) -> int:
        return sum(len(s.hosts) for s in self.services)

    @property
    def work(self) -> float:
        """Seconds of commands over all hosts."""
        return sum(s.duration * len(s.hosts) for s in self.services)

    def critical_path(self) -> float:
        by_name = {s.name: s for s in self.services}
        g = self.graph()
        finish: dict[str, float] = {}
        for n in nx.topological_sort(g):
            finish[n] = max((finish[p] for p in g.predecessors(n)), default=0.0) + by_name[n].duration
        return max(finish.values())

    def bounds(self) -> dict[str, float]:
        """What no executor under these limits can beat: the critical path, the total work spread
        over `parallelism` command slots, and the busiest host's work over its 8 channels."""
        per_host: dict[str, float] = {}
        for s in self.services:
            for h in s.hosts:
                per_host[h] = per_host.get(h, 0.0) + s.duration
        return {
            "critical path": self.critical_path(),
            f"work / parallelism {self.parallelism}": self.work / self.parallelism,
            f"busiest host / {MAX_CHANNELS} channels": max(per_host.values()) / MAX_CHANNELS,
        }

    def lower_bound(self) -> tuple[float, str]:
        name, value = max(self.bounds().items(), key=lambda kv: kv[1])
        return value, name

    def wave_plan(self) -> list[dict[str, list[Service]]]:
        """Per wave, each host's steps in order: how a wave-by-wave tool (Ansible, pyinfra) runs it."""
        by_name = {s.name: s for s in self.services}
        out = []
        for wave in self.waves():
            per_host: dict[str, list[Service]] = {}
            for n in wave:
                for h in by_name[n].hosts:
                    per_host.setdefault(h, []).append(by_name[n])
            out.append(per_host)
        return out

    def wave_bound(self) -> float:
        """The lower bound of the wave mapping: a barrier after each wave, and one command at a
        time per host within a wave (an Ansible task, a pyinfra operation)."""
        return sum(max(sum(s.duration for s in steps) for steps in wave.values())
                   for wave in self.wave_plan())

    def describe(self) -> str:
        durations = sorted({s.duration for s in self.services})
        d = f"{durations[0]:g} s" if len(durations) == 1 else f"{durations[0]:g}–{durations[-1]:g} s"
        return (f"{len(self.services)} services, {len(self.waves())} waves, {len(self.hosts)} hosts, "
                f"{self.host_steps} host-steps of `sleep` {d}, total work {self.work:.1f} s")

    # -- outputs ----------------------------------------------------------------------------

    def write_project(self, root: Path, hosts_yaml: str) -> None:
        """A `release` project: services.d/hosts.yaml as given and one manifest per service."""
        sd = root / "services.d"
        sd.mkdir(parents=True, exist_ok=True)
        (sd / "hosts.yaml").write_text(hosts_yaml)
        for s in self.services:
            (sd / f"{s.name}.yaml").write_text(
                f"hosts: [{', '.join(s.hosts)}]\ndepends_on: [{', '.join(s.deps)}]\n"
                f"deploy: 'sleep {s.duration:g}'\nmax_parallel: \"100%\"\n")

    def to_json(self, connections: dict[str, dict]) -> str:
        """What the floor walker reads: the services and how to reach each host."""
        return json.dumps({
            "parallelism": self.parallelism, "channels": MAX_CHANNELS, "handshakes": MAX_HANDSHAKES,
            "hosts": {h: connections[h] for h in self.hosts},
            "services": [{"name": s.name, "hosts": s.hosts, "deps": s.deps, "duration": s.duration}
                         for s in self.services],
        })


def local_hosts_yaml(hosts: list[str]) -> str:
    return "hosts:\n" + "".join(f"  {h}: {{transport: local}}\n" for h in hosts)


# -- the workloads --------------------------------------------------------------------------

def even(hosts: list[str], seed: int = 11, step: float = 0.3) -> Workload:
    """(a) 24 services in four layers of six, 54 host-steps of 0.3 s on 8 hosts (fewer with
    fewer hosts): the graph of the earlier SSH benchmark, from the same seed."""
    hosts = hosts[:8]
    rng = random.Random(seed)
    names = [f"s{i:02d}" for i in range(24)]
    counts = [3] * 6 + [2] * 18
    services = []
    for i, name in enumerate(names):
        layer = i // 6
        deps = rng.sample(names[(layer - 1) * 6:layer * 6], rng.randint(1, 2)) if layer else []
        chosen = rng.sample(hosts, min(counts[i], len(hosts)))
        services.append(Service(name, chosen, deps, step))
    return Workload("a", "even steps", hosts, services)


def uneven(hosts: list[str], seed: int = 11) -> Workload:
    """(b) the graph of (a), each service's step drawn from 0.1–1.0 s."""
    w = even(hosts, seed)
    rng = random.Random(seed + 1)
    for s in w.services:
        s.duration = round(rng.uniform(0.1, 1.0), 2)
    return Workload("b", "uneven steps", w.hosts, w.services)


def layered(n: int, hosts: list[str], layers: int, counts: list[int], seed: int, step: float,
            total_steps: int | None = None) -> list[Service]:
    """`n` services in `layers` layers; each depends on 1–3 of the layer above and runs on a
    number of hosts drawn from `counts`, adjusted (seeded) so that they add up to `total_steps`."""
    rng = random.Random(seed)
    width = -(-n // layers)
    names = [f"s{i:05d}" for i in range(n)]
    per = [rng.choice(counts) for _ in names]
    if total_steps is not None:
        while sum(per) != total_steps:
            i = rng.randrange(n)
            if sum(per) < total_steps and per[i] < max(counts):
                per[i] += 1
            elif sum(per) > total_steps and per[i] > min(counts):
                per[i] -= 1
    services = []
    for i, name in enumerate(names):
        layer = i // width
        above = names[(layer - 1) * width:layer * width] if layer else []
        deps = sorted(rng.sample(above, min(len(above), rng.randint(1, 3))))
        services.append(Service(name, rng.sample(hosts, per[i]), deps, step))
    return services


def wide(hosts: list[str], seed: int = 13) -> Workload:
    """(c) 500 services on 64 hosts, ten layers, 1,283 host-steps of 0.05 s, parallelism 64."""
    services = layered(500, hosts[:64], 10, [1, 2, 3, 4], seed, 0.05, total_steps=1283)
    return Workload("c", "500 services, short steps", hosts[:64], services, parallelism=64)


PLAN_SIZES = (1250, 5000, 10000)


def plan_only(n: int, seed: int = 17) -> Workload:
    """(d) `n` services in 25 layers on 64 local hosts, for validate and plan only."""
    hosts = [f"h{i:02d}" for i in range(1, 65)]
    return Workload(f"d{n}", f"plan only, {n} services", hosts,
                    layered(n, hosts, 25, [1, 2, 3], seed, 0.05))
