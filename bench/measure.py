"""Whole processes, timed from outside: wall time, exit code and peak RSS, and small statistics
over runs.

Peak RSS is `ru_maxrss` from `wait4`: the largest resident set among the process and the
descendants it waited for (not a sum). A child's figure also counts the memory of the process it
was forked from until its `exec`, so the command runs under GNU time (`/usr/bin/time`, a small
process) which reports its own child's; without GNU time, the benchmark's own size is a floor
under every figure."""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = "/usr/bin/time"


@dataclass
class Sample:
    wall: float
    rc: int
    maxrss_mb: float
    stdout: str
    stderr: str


def _tempfile(what: str) -> Path:
    fd, path = tempfile.mkstemp(prefix=f"bench-{what}-")
    os.close(fd)
    return Path(path)


def run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 1800) -> Sample:
    rss_path, out_path, err_path = (_tempfile(x) for x in ("rss", "out", "err"))
    if os.access(GNU_TIME, os.X_OK):
        cmd = [GNU_TIME, "-q", "-f", "%M", "-o", str(rss_path), *cmd]
    full_env = {**os.environ, **(env or {})}
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            killer = threading.Timer(timeout, proc.kill)  # a hung tool must not hang the benchmark
            killer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                killer.cancel()
            wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait for it again
        stdout = out_path.read_text(errors="replace")
        stderr = err_path.read_text(errors="replace")
        text = rss_path.read_text().strip().splitlines()
    finally:
        for path in (out_path, err_path, rss_path):
            path.unlink(missing_ok=True)
    maxrss_kb = int(text[-1]) if text and text[-1].isdigit() else usage.ru_maxrss
    return Sample(wall, proc.returncode, maxrss_kb / 1024, stdout, stderr)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def percentile(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]
