"""`release` over real sshd hosts against a bare asyncssh graph walk, in one invocation.

Starts a fleet of N sshd hosts in network namespaces (tests/fleet.py; needs root), builds a
24-service graph with 54 host-steps of `sleep 0.3` (critical path 4 x 0.3 s), and times:
  - baseline: a bare asyncssh graph walk (connections opened once, a node starts when its
    dependencies are done, no journal, no health checks, no rolling);
  - release: `orchestrator.apply` on the same graph (journal, lock, plan, preflight included).
Prints medians of --runs and the ratio.

    python bench/bench_ssh.py [--runs 5] [--hosts 8]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncssh
import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import orchestrator  # noqa: E402
import orchestrator.logs  # noqa: E402
from fleet import Fleet, _find_sshd  # noqa: E402
from orchestrator.graph import build_graph  # noqa: E402
from orchestrator.manifests import load_project  # noqa: E402

STEP = 0.3


def make_project(root: Path, fleet: Fleet, seed: int) -> None:
    rng = random.Random(seed)
    sd = root / "services.d"
    sd.mkdir(parents=True, exist_ok=True)
    (sd / "hosts.yaml").write_text(fleet.hosts_yaml())
    names = [f"s{i:02d}" for i in range(24)]
    counts = [3] * 6 + [2] * 6 + [2] * 6 + [2] * 6  # 54 host-steps
    for i, name in enumerate(names):
        layer = i // 6
        deps = rng.sample(names[(layer - 1) * 6:layer * 6], rng.randint(1, 2)) if layer else []
        hosts = rng.sample(fleet.names, counts[i])
        (sd / f"{name}.yaml").write_text(
            f"hosts: [{', '.join(hosts)}]\ndepends_on: [{', '.join(deps)}]\n"
            f"deploy: 'sleep {STEP}'\nmax_parallel: \"100%\"\n")


async def bare_walk(project, g: nx.DiGraph, fleet: Fleet) -> float:
    t0 = time.perf_counter()
    conns = {}
    for h in fleet.hosts:
        conns[h.name] = await asyncssh.connect(
            h.address, port=h.port, username=fleet.user, client_keys=[str(fleet.identity)],
            known_hosts=str(fleet.known_hosts), config=[])
    done = {n: asyncio.Event() for n in g}

    async def node(n: str) -> None:
        for d in g.predecessors(n):
            await done[d].wait()
        spec = project.nodes[n]
        await asyncio.gather(*(conns[h].run(spec.deploy, check=True) for h in project.hosts_of(spec)))
        done[n].set()

    await asyncio.gather(*(node(n) for n in g))
    for c in conns.values():
        c.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hosts", type=int, default=8)
    args = ap.parse_args()
    sshd = _find_sshd()
    if sshd is None:
        sys.exit("needs sshd (apt-get install openssh-server)")
    orchestrator.logs.configure(verbosity=0)
    orchestrator.logs._state["console_level"] = 100
    fleet = Fleet(args.hosts)
    fleet.start(sshd)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ssh-"))
    try:
        make_project(tmp, fleet, seed=11)
        project = load_project(tmp)
        g = build_graph(project)
        steps = sum(len(project.hosts_of(s)) for s in project.services.values())
        bare, rel = [], []
        for i in range(args.runs):
            bare.append(asyncio.run(bare_walk(project, g, fleet)))
            t0 = time.perf_counter()
            orchestrator.apply(tmp, f"r{i}")
            rel.append(time.perf_counter() - t0)
    finally:
        fleet.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    mb, mr = statistics.median(bare), statistics.median(rel)
    cp = STEP * (nx.dag_longest_path_length(g) + 1)
    print(f"fleet: {args.hosts} sshd hosts ({'netns' if fleet.namespaced else 'loopback'}); graph: "
          f"{g.number_of_nodes()} services, {steps} host-steps of {STEP} s; critical path {cp:.1f} s")
    print(f"bare asyncssh walk   median {mb:.2f} s  (runs: {', '.join(f'{x:.2f}' for x in bare)})")
    print(f"release apply        median {mr:.2f} s  (runs: {', '.join(f'{x:.2f}' for x in rel)})")
    print(f"ratio release/bare   {mr / mb:.2f}")


if __name__ == "__main__":
    main()
