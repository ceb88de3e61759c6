"""The floor: the least an asyncssh graph walk must do, under the limits `release` keeps.

    python bench/floor.py WORKLOAD.json [STEPS.json]

Reads the workload that `bench/workloads.py` wrote (services, hosts and how to reach them),
connects to every host (at most `handshakes` at once), then starts each service as soon as
every service it depends on is done on all its hosts, and runs its command on each of its hosts
(at most `channels` commands at once per host, `parallelism` over the whole walk). No journal, no
lock, no plan, no health checks, no environment, no wrapper: `conn.run("sleep D")`. Exits 1 on
the first failed command. Imports only asyncssh, so its start-up is part of what it measures.
With STEPS.json it writes there how long each `conn.run` took beyond its `sleep`: what an SSH
command costs with nothing around it, the part of `release`'s per-step time that is not its own.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import asyncssh


async def walk(spec: dict, steps: list[float]) -> None:
    handshakes = asyncio.Semaphore(spec["handshakes"])
    slots = asyncio.Semaphore(spec["parallelism"])
    channels = {h: asyncio.Semaphore(spec["channels"]) for h in spec["hosts"]}

    async def connect(h: str, c: dict) -> asyncssh.SSHClientConnection:
        async with handshakes:
            return await asyncssh.connect(c["address"], port=c["port"], username=c["user"],
                                          client_keys=[c["identity"]], known_hosts=c["known_hosts"],
                                          config=[])

    names = list(spec["hosts"])
    conns = dict(zip(names, await asyncio.gather(*(connect(h, spec["hosts"][h]) for h in names))))
    services = {s["name"]: s for s in spec["services"]}
    done = {n: asyncio.Event() for n in services}

    async def step(host: str, seconds: float) -> None:
        async with slots, channels[host]:
            t0 = time.monotonic()
            await conns[host].run(f"sleep {seconds:g}", check=True)
            steps.append(time.monotonic() - t0 - seconds)

    async def node(name: str) -> None:
        s = services[name]
        for d in s["deps"]:
            await done[d].wait()
        await asyncio.gather(*(step(h, s["duration"]) for h in s["hosts"]))
        done[name].set()

    try:
        await asyncio.gather(*(node(n) for n in services))
    finally:
        for c in conns.values():
            c.close()
        await asyncio.gather(*(c.wait_closed() for c in conns.values()))


def main() -> None:
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    steps: list[float] = []
    try:
        asyncio.run(walk(spec, steps))
    except (asyncssh.Error, OSError) as exc:
        sys.exit(f"floor: {exc}")
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as fh:
            json.dump(steps, fh)


if __name__ == "__main__":
    main()
