"""RESULTS.md from the record of a run (RESULTS.json): the machine, the command, a table per
workload, plan growth, start-up and one paragraph on what the figures say."""

from __future__ import annotations

from . import measure, tools
from .profile import Profile, summary

DEMO_VALIDATE = "release validate (demo)"  # a start-up row
PLAN_BASE_SIZE = 25
PLAN_BASE = f"release validate ({PLAN_BASE_SIZE} services)"  # timed among (d)'s commands

LABELS = {
    "release": "`release apply` (CLI)",
    "floor": "floor: minimal asyncssh walker",
    "ansible": "`ansible-playbook`",
    "pyinfra": "`pyinfra`",
}


def profile_lines(p: Profile) -> list[str]:
    return summary(p)


def plan_key(n: int, verb: str) -> str:
    return f"d{n} {verb}"


def _s(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _median(xs: list[float] | None) -> float | None:
    return measure.median(xs) if xs else None


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or not b else f"{a / b:.2f}"


def _ms(spread: dict) -> str:
    return f"p50 **{spread['p50'] * 1000:.0f} ms**, p95 {spread['p95'] * 1000:.0f} ms"


def _workload(res) -> list[str]:
    w = res.workload
    out = [f"## ({w.key}) {w.title}", ""]
    if res.skipped:
        return out + [f"Skipped: {res.skipped}. {w.describe()}.", ""]
    lb, which = w.lower_bound()
    bounds = "; ".join(f"{k} {v:.2f} s" for k, v in w.bounds().items())
    out += [
        f"{w.describe()}; `--parallelism {w.parallelism}`, at most 8 commands per host and 10 "
        "handshakes at once (release and floor alike).",
        "",
        f"Lower bound **{lb:.2f} s**, set by the {which} (bounds: {bounds}). The wave mapping that "
        f"Ansible and pyinfra run cannot go below {w.wave_bound():.2f} s (a barrier per wave, one "
        "step at a time per host).",
        "",
        "| tool | wall median | min–max | ÷ lower bound | ÷ floor | ÷ Ansible | peak RSS (MB) | runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    floor = _median(res.tools["floor"].walls) if "floor" in res.tools else None
    ansible = _median(res.tools["ansible"].walls) if "ansible" in res.tools else None
    for name in sorted(res.tools, key=list(LABELS).index):
        runs = res.tools[name]
        label = LABELS[name]
        if runs.missing:
            out.append(f"| {label} | {runs.missing} | | | | | | |")
            continue
        m = _median(runs.walls)
        span = f"{min(runs.walls):.2f}–{max(runs.walls):.2f}" if runs.walls else "–"
        count = f"{len(runs.walls)}" + (f" ({len(runs.failures)} failed)" if runs.failures else "")
        out.append(f"| {label} | {_s(m)} s | {span} | {_ratio(m, lb)} | {_ratio(m, floor)} | "
                   f"{_ratio(m, ansible)} | {_s(_median(runs.rss), 0)} | {count} |")
    failures = [(n, f) for n, r in res.tools.items() for f in r.failures[:2]]
    if failures:
        out += [""] + [f"- {n} failed: `{f}`" for n, f in failures]
    if res.dispatch:
        runs = max(1, len(res.tools["release"].walls))
        text = (f"Per-step overhead of `release` ({res.dispatch['n'] // runs} steps per run, "
                f"{res.dispatch['n']} in all), beyond the step's own `sleep`: from its command "
                f"starting to its outcome journaled (the run's JSONL log) {_ms(res.dispatch)}")
        if res.journal:
            text += (f"; from its intent journaled to its outcome journaled (the journal's step rows, "
                     f"waiting for a parallelism slot included) {_ms(res.journal)}")
        text += "."
        if res.floor_steps:
            own = res.dispatch["p50"] - res.floor_steps["p50"]
            text += (f" The floor's `conn.run` takes, beyond its `sleep`, {_ms(res.floor_steps)} (opening "
                     f"and closing an SSH session under the same load): `release`'s own share of a step, "
                     f"the difference of the medians, is **{own * 1000:.0f} ms** (its wrapper's processes "
                     f"on the host, the journal, the log).")
        out += ["", text]
    out += _profile(res.profile_note, res.profile)
    return out + [""]


def _profile(note: str | None, lines: list[str] | None) -> list[str]:
    out = ["", f"Profile: {note}.", ""] if note else []
    return out + (lines or [])


def _plans(plans: dict, base: tuple[str, float] | None) -> list[str]:
    """`base`: the start-up every validate and plan pays whatever the graph (its command, median)."""
    sizes, verbs, times, rss = plans["sizes"], plans["commands"], plans["times"], plans["rss"]
    out = ["## (d) plan only: large graphs on local hosts", "",
           "Each graph: N services in 25 layers on 64 `local` hosts, each service depending on 1–3 "
           "of the layer above and on 1–3 hosts. Whole processes (interpreter start-up included).", "",
           "| services | " + " | ".join(f"`release {v}`" for v in verbs) + " | peak RSS of `plan --json` (MB) |",
           "| ---: | " + " | ".join("---:" for _ in verbs) + " | ---: |"]
    med = {k: _median(v) for k, v in times.items()}
    for n in sizes:
        cells = []
        for v in verbs:
            xs = times[plan_key(n, v)]
            cells.append(f"{_s(med[plan_key(n, v)])} s ({min(xs):.2f}–{max(xs):.2f})" if xs else "failed")
        out.append(f"| {n:,} | " + " | ".join(cells) + f" | {_s(_median(rss[plan_key(n, verbs[-1])]), 0)} |")
    out.append("")
    for a in sizes:
        for b in sizes:
            if b in (2 * a, 4 * a):
                growth = ", ".join(f"`{v}` {_ratio(med[plan_key(b, v)], med[plan_key(a, v)])}×" for v in verbs)
                text = (f"- {b // a}× the services ({a:,} → {b:,}): time {growth}"
                        + (" (the target: at most 5× for 4× the nodes)" if b == 4 * a else ""))
                if base:
                    what, t = base
                    net = ", ".join(f"`{v}` {_ratio(_less(med[plan_key(b, v)], t), _less(med[plan_key(a, v)], t))}×"
                                    for v in verbs)
                    text += f"; less the start-up of `{what}` ({t:.2f} s): {net}"
                out.append(text + ".")
    for key, why in plans["failures"].items():
        out.append(f"- `{key}` failed: `{why}`")
    out += _profile(*plans.get("profile") or (None, None))
    return out + [""]


def _startup_base(plans: dict, startup: dict) -> tuple[str, float] | None:
    """What validate and plan pay on any graph: `release validate` of a small graph timed among
    (d)'s commands; results from before it was measured fall back on `release --help`."""
    for what, times in ((PLAN_BASE, plans.get("times", {})), ("release --help", startup.get("times", {}))):
        t = _median(times.get(what))
        if t:
            return what, t
    return None


def _less(x: float | None, base: float) -> float | None:
    return None if x is None or x <= base else x - base


def _startup(startup: dict) -> list[str]:
    out = ["## Start-up", "", "| command | median | min–max | peak RSS (MB) |", "| --- | ---: | ---: | ---: |"]
    for c, xs in startup["times"].items():
        if xs:
            out.append(f"| `{c}` | {measure.median(xs):.3f} s | {min(xs):.3f}–{max(xs):.3f} | "
                       f"{_s(_median(startup['rss'][c]), 0)} |")
        else:
            out.append(f"| `{c}` | failed: {startup['failures'].get(c, '?')} | | |")
    if startup.get("imports"):
        total, per = startup["imports"]
        out += ["", f"Importing modules for `release --help` took {total:.2f} s in one run under "
                "`python -X importtime` (its own overhead included); by top-level package (cumulative, first import): "
                + ", ".join(f"{name} {t:.2f} s ({t / total:.0%})" for name, t in per) + "."]
    return out + [""]


def _meaning(results: list, plans: dict | None, base: float | None) -> list[str]:
    """One paragraph of what the figures say, computed from them."""
    parts = []
    for res in results:
        rel = _median(res.tools["release"].walls) if not res.skipped else None
        if rel is None:
            continue
        lb, _ = res.workload.lower_bound()
        bit = f"({res.workload.key}) {rel:.2f} s, {rel / lb:.1f}× its lower bound"
        floor = _median(res.tools["floor"].walls)
        if floor:
            bit += f" and {rel / floor:.1f}× the floor (+{rel - floor:.1f} s)"
        ansible = _median(res.tools["ansible"].walls) if "ansible" in res.tools else None
        if ansible:
            bit += f"; Ansible took {ansible / rel:.1f}× as long as `release`"
        pyinfra = _median(res.tools["pyinfra"].walls) if "pyinfra" in res.tools else None
        if pyinfra:
            bit += f", pyinfra {pyinfra / rel:.1f}×"
        parts.append(bit)
    if not parts:
        return []
    text = ("`release apply` took " + "; ".join(parts) + ". The floor is what any asyncssh tool "
            "under the same limits pays (interpreter and asyncssh start-up, handshakes, a channel "
            "per command, and on this loaded 2-core machine the CPU those cost); the distance from "
            "the floor to `release` is the price of the journal (a durable SQLite write before and "
            "after each step), the lock, the plan, the preflight, the remote wrapper and the "
            "logging, and the per-step overhead is that price per step. Ansible and pyinfra are held "
            "back by the wave mapping (their bound is given with each workload) and by their own "
            "per-task cost.")
    if plans:
        sizes = plans["sizes"]
        pairs = [(a, 4 * a) for a in sizes if 4 * a in sizes]
        med = {k: _median(v) for k, v in plans["times"].items()}
        for a, b in pairs:
            g = [med[plan_key(b, v)] / med[plan_key(a, v)] for v in plans["commands"]
                 if med[plan_key(b, v)] and med[plan_key(a, v)]]
            if g:
                text += (f" Validating and planning take {min(g):.1f}–{max(g):.1f}× as long for 4× the "
                         f"services ({a:,} → {b:,}), {'within' if max(g) <= 5 else 'beyond'} the 5× target")
                net = [_less(med[plan_key(b, v)], base) / _less(med[plan_key(a, v)], base)
                       for v in plans["commands"] if base and _less(med[plan_key(b, v)], base)
                       and _less(med[plan_key(a, v)], base)]
                if net:
                    text += (f" as whole processes, and {min(net):.1f}–{max(net):.1f}× once the constant "
                             f"start-up is taken off ({'within' if max(net) <= 5 else 'beyond'} it)")
                text += "."
    return ["## What the numbers mean", "", text, ""]


def render(state: dict) -> str:
    from .run import WorkloadResult

    m = state["machine"]
    results = [WorkloadResult.from_dict(r) for r in state["results"]]
    before, after = state["load"][0], state["load"][-1]
    out = [
        "# Benchmark results", "",
        "Written by `python -m bench` (bench/run.py; the raw figures are in RESULTS.json beside "
        "this file). What it measures: [docs/development.md](../docs/development.md#benchmarks).", "",
        f"- date: {state['started']}",
        f"- command: `{state['command']}`",
        f"- machine: {m.get('nproc')} CPUs ({m.get('cpu', '?')}), {m.get('memory', '?')} memory, "
        f"Python {m['python']}, {m['os']}",
        f"- tools: {m['versions']}",
        f"- load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in before)}, after: "
        f"{' '.join(f'{x:.2f}' for x in after)}",
        "",
        "The machine is shared (2 cores, other people's test suites running at the same time), so "
        "absolute figures are noisy. Runs are interleaved (the order of the tools rotates from run "
        f"to run; warm-up runs of each first: {state['warmup']}): compare tools by their ratios within "
        f"this run. Medians of {state['runs']} runs.", "",
    ]
    for res in results:
        out += _workload(res)
    if any(not r.skipped for r in results):
        out += ["## How the workload was mapped", "",
                f"- Ansible: {tools.MAPPING['ansible']}",
                f"- pyinfra: {tools.MAPPING['pyinfra']}",
                f"- What neither can express: {tools.MAPPING['cannot']}",
                "- The floor: `bench/floor.py`, a separate process: connects to every host (10 "
                "handshakes at once), walks the graph starting a service when its dependencies are "
                "done everywhere, `conn.run('sleep D')` per host (8 at once per host, parallelism as "
                "for `release`). No journal, lock, plan, wrapper or environment.",
                "- Peak RSS: GNU time's maximum resident set size of the command (`wait4`): the "
                "largest single process among it and the children it waited for, not a sum "
                "(Ansible's forks are not added up).", ""]
    base = _startup_base(state.get("plans") or {}, state.get("startup") or {})
    if state.get("plans"):
        out += _plans(state["plans"], base)
    if state.get("startup"):
        out += _startup(state["startup"])
    out += _meaning(results, state.get("plans"), base[1] if base else None)
    return "\n".join(out).rstrip() + "\n"
