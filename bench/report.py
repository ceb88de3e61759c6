"""RESULTS.md: the machine, the command, a table per workload, plan growth and start-up."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from . import measure, tools
from .profile import Profile, summary

if TYPE_CHECKING:
    import argparse

    from .run import ToolRuns, WorkloadResult

LABELS = {
    "release": "`release apply` (CLI)",
    "floor": "floor: minimal asyncssh walker",
    "ansible": "`ansible-playbook`",
    "pyinfra": "`pyinfra`",
}


def profile_lines(p: Profile) -> list[str]:
    return summary(p)


def _s(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _median(runs: ToolRuns | None) -> float | None:
    return measure.median(runs.walls) if runs and runs.walls else None


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or not b else f"{a / b:.2f}"


def _workload(res: WorkloadResult) -> list[str]:
    w = res.workload
    out = [f"## ({w.key}) {w.title}", ""]
    if res.skipped:
        return out + [f"Skipped: {res.skipped}. {w.describe()}.", ""]
    lb, which = w.lower_bound()
    bounds = "; ".join(f"{k} {v:.2f} s" for k, v in w.bounds().items())
    out += [
        f"{w.describe()}; `--parallelism {w.parallelism}`, at most {8} commands per host and 10 "
        f"handshakes at once (release and floor alike).",
        "",
        f"Lower bound **{lb:.2f} s**, set by the {which} (bounds: {bounds}). The wave mapping that Ansible and pyinfra "
        f"run cannot go below {w.wave_bound():.2f} s (a barrier per wave, one step at a time per host).",
        "",
        "| tool | wall median | min–max | ÷ lower bound | ÷ floor | ÷ Ansible | peak RSS (MB) | runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    floor = _median(res.tools.get("floor"))
    ansible = _median(res.tools.get("ansible"))
    for name in sorted(res.tools, key=list(LABELS).index):
        runs = res.tools[name]
        label = LABELS.get(name, name)
        if runs.missing:
            out.append(f"| {label} | {runs.missing} | | | | | | |")
            continue
        m = _median(runs)
        span = f"{min(runs.walls):.2f}–{max(runs.walls):.2f}" if runs.walls else "–"
        rss = _s(measure.median(runs.rss), 0) if runs.rss else "–"
        count = f"{len(runs.walls)}" + (f" ({len(runs.failures)} failed)" if runs.failures else "")
        out.append(f"| {label} | {_s(m)} s | {span} | {_ratio(m, lb)} | {_ratio(m, floor)} | "
                   f"{_ratio(m, ansible)} | {rss} | {count} |")
    failures = [(n, f) for n, r in res.tools.items() for f in r.failures[:2]]
    if failures:
        out += [""] + [f"- {n} failed: `{f}`" for n, f in failures]
    if res.dispatch_overhead:
        d, j = res.dispatch_overhead, res.journal_overhead
        out += ["", f"Per-step overhead of `release` over {len(d)} steps ({len(d) // max(1, len(res.tools['release'].walls))} per run), "
                "seconds beyond the step's own `sleep`: "
                f"command started → outcome journaled (JSONL log) p50 **{measure.percentile(d, 50) * 1000:.0f} ms**, "
                f"p95 {measure.percentile(d, 95) * 1000:.0f} ms"
                + (f"; intent journaled → outcome journaled (journal rows, includes waiting for a slot) "
                   f"p50 {measure.percentile(j, 50) * 1000:.0f} ms, p95 {measure.percentile(j, 95) * 1000:.0f} ms"
                   if j else "") + "."]
    if res.profile_note:
        out += ["", f"Profile: {res.profile_note}.", ""]
    if res.profile:
        out += res.profile
    return out + [""]


def _plans(plans: dict) -> list[str]:
    sizes, commands, times, rss = plans["sizes"], plans["commands"], plans["times"], plans["rss"]
    out = ["## (d) plan only: large graphs on local hosts", "",
           "Each graph: N services in 25 layers on 64 `local` hosts, each depending on 1–3 of the "
           "layer above, on 1–3 hosts. Whole processes (interpreter start-up included), medians.", "",
           "| services | " + " | ".join(f"`release {c}`" for c in commands) + " | peak RSS of `plan --json` (MB) |",
           "| ---: | " + " | ".join("---:" for _ in commands) + " | ---: |"]
    med = {k: (measure.median(v) if v else None) for k, v in times.items()}
    for n in sizes:
        cells = []
        for c in commands:
            v = times[(n, c)]
            cells.append(f"{_s(med[(n, c)])} s ({min(v):.2f}–{max(v):.2f})" if v else "failed")
        r = rss[(n, commands[-1])]
        out.append(f"| {n:,} | " + " | ".join(cells) + f" | {_s(measure.median(r), 0) if r else '–'} |")
    out.append("")
    pairs = [(a, b) for a in sizes for b in sizes if b > a and b in (a * 2, a * 4)]
    for a, b in pairs:
        growth = ", ".join(f"`{c}` {_ratio(med[(b, c)], med[(a, c)])}×" for c in commands)
        out.append(f"- {b / a:g}× services ({a:,} → {b:,}): time {growth}"
                   + (" (the target: at most 5× time for 4× nodes)" if b == 4 * a else "") + ".")
    for key, why in plans["failures"].items():
        out.append(f"- d{key[0]} `{key[1]}` failed: `{why}`")
    note, lines = plans.get("profile", (None, None))
    if note:
        out += ["", f"Profile: {note}.", ""]
    if lines:
        out += lines
    return out + [""]


def _startup(startup: dict) -> list[str]:
    out = ["## Start-up", "", "| command | median | min–max | peak RSS (MB) |", "| --- | ---: | ---: | ---: |"]
    for c, v in startup["times"].items():
        if v:
            out.append(f"| `{c}` | {measure.median(v):.3f} s | {min(v):.3f}–{max(v):.3f} | "
                       f"{measure.median(startup['rss'][c]):.0f} |")
        else:
            out.append(f"| `{c}` | failed: {startup['failures'].get(c, '?')} | | |")
    return out + [""]


def _meaning(results: list[WorkloadResult], plans: dict | None) -> list[str]:
    """One paragraph of what the figures say, computed from them."""
    parts = []
    for res in results:
        if res.skipped or "release" not in res.tools:
            continue
        rel = _median(res.tools["release"])
        if rel is None:
            continue
        lb, _ = res.workload.lower_bound()
        floor = _median(res.tools.get("floor"))
        ansible = _median(res.tools.get("ansible"))
        bit = f"({res.workload.key}) {rel:.2f} s = {rel / lb:.2f}× its lower bound"
        if floor:
            bit += f", {rel / floor:.2f}× the floor (+{rel - floor:.2f} s)"
        if ansible:
            bit += f", {ansible / rel:.1f}× faster than Ansible"
        parts.append(bit)
    if not parts:
        return []
    text = ("`release apply` took " + "; ".join(parts) + ". The floor is what any asyncssh tool "
            "under the same limits pays (interpreter and asyncssh start-up, handshakes, one channel "
            "per command); the distance from the floor to `release` is the price of the journal "
            "(two durable SQLite writes per step), the lock, the plan, the preflight and the remote "
            "wrapper, and the per-step overhead above is that price per step. Ansible and pyinfra "
            "pay for the wave mapping (compare their walls with its bound) and their own per-task "
            "cost.")
    if plans:
        sizes = plans["sizes"]
        a, b = sizes[0], next((s for s in sizes if s == 4 * sizes[0]), None)
        if b:
            med = {k: (measure.median(v) if v else None) for k, v in plans["times"].items()}
            g = [med[(b, c)] / med[(a, c)] for c in plans["commands"] if med[(b, c)] and med[(a, c)]]
            if g:
                text += (f" Planning grows {min(g):.1f}–{max(g):.1f}× for 4× the services "
                         f"({'within' if max(g) <= 5 else 'beyond'} the 5× target).")
    return ["## What the numbers mean", "", text, ""]


def render(*, command: str, started: dt.datetime, load: tuple, results: list[WorkloadResult],
           plans: dict | None, startup: dict | None, args: argparse.Namespace) -> str:
    from .run import machine

    m = machine()
    out = [
        "# Benchmark results", "",
        "Generated by `python -m bench` (bench/run.py); what it measures is described in "
        "[docs/development.md](../docs/development.md#benchmarks).", "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- command: `{command}`",
        f"- machine: {m.get('nproc')} CPUs ({m.get('cpu', '?')}), {m.get('memory', '?')} memory, "
        f"Python {m['python']}, {m['os']}",
        f"- tools: {m['versions']}",
        f"- load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in load[0])}, after: "
        f"{' '.join(f'{x:.2f}' for x in load[1])}",
        "",
        "The machine is shared (2 cores, other people's test suites running at the same time): "
        "absolute figures are noisy. Runs are interleaved (the order of the tools rotates from "
        f"run to run; one warm-up run each first), so compare tools by the ratios of the same "
        f"run; medians of {args.runs} runs.", "",
    ]
    for res in results:
        out += _workload(res)
    if any(not r.skipped for r in results):
        out += ["## How the workload was mapped for Ansible and pyinfra", "",
                f"- Ansible: {tools.MAPPING['ansible']}",
                f"- pyinfra: {tools.MAPPING['pyinfra']}",
                f"- What neither can express: {tools.MAPPING['cannot']}",
                "- The floor: `bench/floor.py`, a separate process: connects to every host (10 "
                "handshakes at once), walks the graph starting a service when its dependencies are "
                "done everywhere, `conn.run('sleep D')` per host (8 at once per host, parallelism as "
                "for `release`). No journal, lock, plan, wrapper or environment.",
                "- Peak RSS: GNU time's maximum resident set size of the command (`wait4`): the "
                "largest single process among it and the children it waited for, not a sum "
                "(Ansible's forks and pyinfra's are not added up).", ""]
    if plans:
        out += _plans(plans)
    if startup:
        out += _startup(startup)
    out += _meaning(results, plans)
    return "\n".join(out).rstrip() + "\n"
