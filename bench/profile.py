"""py-spy's collapsed stacks (`--format raw`) summed up: the functions that cost the most.

Each line of the file is `frame;frame;...;frame COUNT`, outermost first, a frame being
`function (file:line)`. A function's *own* share counts the samples where it is the innermost
frame; its *total* share those where it is anywhere on the stack (once per sample).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


@dataclass
class Profile:
    samples: int
    own: Counter
    total: Counter
    modules: Counter  # own samples per top-level package (orchestrator, asyncssh, sqlalchemy ...)


def _name(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    path = m.group("file")
    short = path.split("site-packages/")[-1].split("/lib/python3")[-1]
    for root in ("orchestrator/", "bench/"):
        if root in short:
            short = root + short.split(root, 1)[1]
    return f"{m.group('func')} ({short})", short


def _package(path: str) -> str:
    if not path:
        return "?"
    if path.startswith("<frozen"):
        return "import machinery"
    if path.startswith(("orchestrator/", "bench/")):
        return path.split("/")[0]
    head = path.lstrip("/").split("/")[0]
    if head.endswith(".py"):
        return f"stdlib:{head[:-3]}"
    return head if "." not in head else "?"


def parse(path: Path) -> Profile:
    own: Counter = Counter()
    total: Counter = Counter()
    modules: Counter = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_name(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        own[frames[-1][0]] += n
        modules[_package(frames[-1][1])] += n
        names = {f[0] for f in frames}
        for name in names:
            total[name] += n
        # Nested imports: count a sample once, under its outermost import.
        if any(f[0].startswith("_find_and_load (") for f in frames):
            total["_find_and_load (outermost)"] += n
    return Profile(samples, own, total, modules)


def summary(p: Profile, top: int = 12) -> list[str]:
    """Markdown lines: the top functions by own and by total share, and own time per package."""
    if not p.samples:
        return ["(no samples)"]

    def pct(n: int) -> str:
        return f"{100 * n / p.samples:.1f}%"

    lines = ["| own | function |", "| ---: | --- |"]
    lines += [f"| {pct(n)} | `{f}` |" for f, n in p.own.most_common(top)]
    lines += ["", "| total | function of `orchestrator` (inclusive) |", "| ---: | --- |"]
    ours = [(f, n) for f, n in p.total.most_common() if "(orchestrator/" in f
            and not f.startswith(("<module> (orchestrator/__main__", "run (orchestrator/cli", "main (orchestrator/cli"))]
    lines += [f"| {pct(n)} | `{f}` |" for f, n in ours[:top]]
    imports = p.total["_find_and_load (outermost)"]
    lines += [f"| {pct(imports)} | importing modules (`_find_and_load`, outermost) |"]
    lines += ["", "Own samples by package: " + ", ".join(f"{m} {pct(n)}" for m, n in p.modules.most_common(10))]
    return lines


def import_times(stderr: str) -> tuple[float, list[tuple[str, float]]]:
    """`python -X importtime`'s report: the whole import time (every outermost import, the
    interpreter's own included: the package root imports little eagerly, so its own cumulative
    time no longer says what a command loads) and, per top-level package, the cumulative time of
    its first import (packages imported by another count there)."""
    total = 0.0
    per: Counter = Counter()
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, raw = line[len("import time:"):].split("|")
        name = raw.strip()
        if not raw.startswith("  "):  # outermost: what it imported is in its cumulative time
            total += int(cumulative) / 1e6
        if "." not in name and not name.startswith("_"):
            per[name] += int(cumulative) / 1e6
    return total, per.most_common(8)
