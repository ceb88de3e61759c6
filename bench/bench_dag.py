"""DAG walk against a barrier per wave, on the same graph and the same step durations.

A 24-service graph over 8 hosts with uneven steps (0.1-1.0 s, seeded). `release`'s executor runs
it through MockTransport commands that sleep; the baseline, run in the same invocation, waits for
every node of a wave before starting the next (what a playbook of stages does). Prints medians of
N runs, the critical path, and the ratio.

    python bench/bench_dag.py [--runs 5] [--scale 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import networkx as nx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orchestrator  # noqa: E402
import orchestrator.logs  # noqa: E402
from orchestrator.graph import build_graph, waves  # noqa: E402
from orchestrator.manifests import load_project  # noqa: E402
from orchestrator.transports import CallLog, CommandResult, MockTransport, TransportPool  # noqa: E402

HOSTS = [f"h{i}" for i in range(1, 9)]


def make_project(root: Path, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    sd = root / "services.d"
    sd.mkdir(parents=True)
    (sd / "hosts.yaml").write_text("hosts:\n" + "".join(f"  {h}: {{transport: local}}\n" for h in HOSTS))
    durations = {}
    names = [f"s{i:02d}" for i in range(24)]
    for i, name in enumerate(names):
        # Four layers of six; each service depends on one or two of the layer above.
        layer = i // 6
        deps = rng.sample(names[(layer - 1) * 6:layer * 6], rng.randint(1, 2)) if layer else []
        hosts = rng.sample(HOSTS, rng.choice([1, 2, 3]))
        durations[name] = round(rng.uniform(0.1, 1.0), 2)
        (sd / f"{name}.yaml").write_text(
            f"hosts: [{', '.join(hosts)}]\ndepends_on: [{', '.join(deps)}]\ndeploy: 'true'\nmax_parallel: 3\n")
    return durations


def critical_path(g: nx.DiGraph, durations: dict[str, float]) -> float:
    finish: dict[str, float] = {}
    for n in nx.topological_sort(g):
        finish[n] = max((finish[p] for p in g.predecessors(n)), default=0.0) + durations[n]
    return max(finish.values())


def sleeper(durations: dict[str, float], scale: float):
    async def handler(host: str, cmd) -> CommandResult:
        await asyncio.sleep(durations[cmd.env["RELEASE_SERVICE"]] * scale)
        return CommandResult(0)
    return handler


def run_release(root: Path, durations: dict[str, float], scale: float, name: str) -> float:
    handler = sleeper(durations, scale)

    def factory(project, hosts):
        return TransportPool({h: MockTransport(h, handler, CallLog()) for h in hosts})

    t0 = time.perf_counter()
    orchestrator.apply(root, name, journal=f"sqlite:///{root}/.release/bench-{name}.db", transports=factory)
    return time.perf_counter() - t0


def run_barrier(g: nx.DiGraph, project, durations: dict[str, float], scale: float) -> float:
    """The baseline: every node of a wave must finish before the next wave starts."""
    handler = sleeper(durations, scale)

    async def node(n: str) -> None:
        spec = project.nodes[n]
        await asyncio.gather(*(handler(h, type("C", (), {"env": {"RELEASE_SERVICE": n}})())
                               for h in project.hosts_of(spec)))

    async def main() -> None:
        for wave in waves(g):
            await asyncio.gather(*(node(n) for n in wave))

    t0 = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scale", type=float, default=0.5, help="multiply step durations (shorter runs)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    orchestrator.logs.configure(verbosity=0)
    orchestrator.logs._state["console_level"] = 100  # quiet: the figures are the output
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        durations = make_project(root, args.seed)
        project = load_project(root)
        g = build_graph(project)
        cp = critical_path(g, durations) * args.scale
        walk, barrier = [], []
        for i in range(args.runs):
            walk.append(run_release(root, durations, args.scale, f"r{i}"))
            barrier.append(run_barrier(g, project, durations, args.scale))
    mw, mb = statistics.median(walk), statistics.median(barrier)
    print(f"graph: {g.number_of_nodes()} services, {len(waves(g))} waves, critical path {cp:.2f} s")
    print(f"release DAG walk      median {mw:.2f} s  (runs: {', '.join(f'{x:.2f}' for x in walk)})")
    print(f"barrier per wave      median {mb:.2f} s  (runs: {', '.join(f'{x:.2f}' for x in barrier)})")
    print(f"ratio walk/barrier    {mw / mb:.2f}")
    print(f"overhead over critical path: {mw - cp:.2f} s ({(mw / cp - 1) * 100:.0f}%)")


if __name__ == "__main__":
    main()
