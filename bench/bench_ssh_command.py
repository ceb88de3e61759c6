"""Per-command cost of the ssh transport: `true` through `SSHTransport.run` against a bare asyncssh
`conn.run("true")` on the same connection, and the wrapper's parts run alone. Prints figures.

    python bench/bench_ssh_command.py [--runs 200] [--env 8] [--script true] [--concurrency 1]

Needs root and OpenSSH's sshd: starts a one-host fleet (tests/fleet.py). The calls are
interleaved (bare, release, ...) so that load affects both alike; medians, p95 and the load
average before and after are printed. The rows other than `release` and `bare` time pieces of
the wrapper as bare commands, to attribute the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import load_fleet  # noqa: E402
from orchestrator.transports.base import Command  # noqa: E402
from orchestrator.transports.ssh import SSHTransport  # noqa: E402
from orchestrator.transports.ssh_remote import wrapper  # noqa: E402


def parts(silence: int, env: dict[str, str]) -> dict[str, str]:
    """Bare commands that are pieces of the wrapper, to see what each adds to `true`."""
    marker = "__release_pid_0123456789abcdef__"
    exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in env.items())
    return {
        "sh -c true": "exec /bin/sh -c true",
        "sh -c 'sh -c true'": "exec /bin/sh -c " + shlex.quote("/bin/sh -c true"),
        "marker+cd+exports": "exec /bin/sh -c " + shlex.quote(
            f"printf '%s %s\\n' {marker} \"$$\"; cd || exit 125; {exports}/bin/sh -c true"),
        "wrapper (as sent)": "exec /bin/sh -c " + shlex.quote(
            wrapper(Command("true", env), marker, silence)),
    }


async def timed(fn) -> float:
    t = time.perf_counter()
    await fn()
    return time.perf_counter() - t


async def main(runs: int, nenv: int, script: str, concurrency: int) -> None:
    fleet_mod = load_fleet()
    fl = fleet_mod.Fleet(1)
    fl.start(fleet_mod._find_sshd())
    try:
        name = fl.names[0]
        t = SSHTransport(name, fl.host_spec(name))
        await t.connect()
        conn = t.connection
        env = {f"RELEASE_VAR_{i}": f"value {i}" for i in range(nenv)}
        cmd = Command(script, env)
        extra = parts(t.silence, env) if concurrency == 1 and script == "true" else {}

        async def release() -> None:
            rs = await asyncio.gather(*(t.run(cmd) for _ in range(concurrency)))
            assert all(r.ok for r in rs), rs

        async def bare() -> None:
            await asyncio.gather(*(conn.run(script) for _ in range(concurrency)))

        async def bare_line(line: str) -> None:
            # Stdin stays open, as for the transport (the wrapper's watcher reads it).
            p = await conn.create_process(line, encoding=None)
            if line != extra["wrapper (as sent)"]:  # its watcher would kill it on end of file
                p.stdin.write_eof()
            await p.wait_closed()

        bare_name, release_name = f"bare conn.run({script!r})", f"SSHTransport.run({script!r})"
        rows: dict[str, list[float]] = {bare_name: [], release_name: []}
        rows.update({k: [] for k in extra})
        for _ in range(10):  # warm-up
            await release()
            await bare()
        load0 = os.getloadavg()
        for _ in range(runs):
            rows[bare_name].append(await timed(bare))
            rows[release_name].append(await timed(release))
            for k, line in extra.items():
                rows[k].append(await timed(lambda line=line: bare_line(line)))
        load1 = os.getloadavg()
        await t.close()
    finally:
        fl.stop()
    base = statistics.median(rows[bare_name])
    print(f"{runs} runs each, interleaved; {concurrency} at once; {nenv} environment variables; "
          f"silence {t.silence}s")
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f}, after {load1[0]:.2f} {load1[1]:.2f}")
    print(f"{'command':34} {'median ms':>10} {'p95 ms':>8} {'- bare ms':>10}")
    for k, xs in rows.items():
        xs = sorted(xs)
        med = statistics.median(xs)
        p95 = xs[int(0.95 * (len(xs) - 1))]
        print(f"{k:34} {med * 1e3:10.2f} {p95 * 1e3:8.2f} {(med - base) * 1e3:10.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--env", type=int, default=8, help="environment variables per command")
    ap.add_argument("--script", default="true", help="the command (the wrapper's parts: `true` only)")
    ap.add_argument("--concurrency", type=int, default=1, help="commands at once per timing (<= 8)")
    a = ap.parse_args()
    asyncio.run(main(a.runs, a.env, a.script, a.concurrency))
