"""The benchmark: `release apply` on real sshd hosts against its lower bound, a minimal asyncssh
walker (the floor), Ansible and pyinfra; `release validate`/`plan` on large graphs; start-up, peak
RSS and per-step overhead. Writes bench/RESULTS.md (or --out).

    python -m bench [--hosts 8] [--runs 5] [--workloads a,b,c,d] [--no-ansible] [--no-pyinfra]
                    [--profile] [--out FILE]

Every figure is a whole process timed from outside, runs interleaved (the order of the tools
rotates from run to run), medians of --runs after one warm-up run. Needs root and OpenSSH's sshd
for workloads a–c (the fleet of tests/fleet.py); (c) needs --hosts 64. Speed is reported, never
asserted.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import measure, report, tools, workloads  # noqa: E402
from bench.profile import import_times, parse as parse_profile  # noqa: E402

RELEASE = [sys.executable, "-m", "orchestrator"]
RELEASE_ENV = {"PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
FLEET_WORKLOADS = ("a", "b", "c")
WIDE_HOSTS = 64
PROFILE_RATE = 200


@dataclass
class ToolRuns:
    walls: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    missing: str | None = None  # why the tool did not run at all


@dataclass
class WorkloadResult:
    workload: workloads.Workload
    tools: dict[str, ToolRuns] = field(default_factory=dict)
    # Per-step overhead of `release` (seconds beyond the step's own sleep): {"n", "p50", "p95"}.
    dispatch: dict | None = None  # JSONL log: deploy.start (slot taken) -> deploy.done (outcome journaled)
    journal: dict | None = None  # journal rows: intent written -> outcome written (slot waits included)
    floor_steps: dict | None = None  # the floor's `conn.run` beyond its sleep: SSH's own per-step cost
    skipped: str | None = None
    profile_note: str = ""
    profile: list[str] | None = None

    @classmethod
    def from_dict(cls, d: dict) -> WorkloadResult:
        return cls(**{**d, "workload": workloads.Workload.from_dict(d["workload"]),
                      "tools": {k: ToolRuns(**v) for k, v in d["tools"].items()}})


def spread(xs: list[float]) -> dict | None:
    if not xs:
        return None
    return {"n": len(xs), "p50": measure.percentile(xs, 50), "p95": measure.percentile(xs, 95)}


# -- fleet ----------------------------------------------------------------------------------

def load_fleet():
    """tests/fleet.py, which is also a pytest plugin: without pytest, a stand-in for its decorator."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import pytest  # noqa: F401
    except ImportError:
        stub = types.ModuleType("pytest")
        stub.fixture = lambda *a, **k: (lambda f: f)  # type: ignore[attr-defined]
        sys.modules["pytest"] = stub
    import fleet

    return fleet


# -- one tool, one run ----------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp

    def _failure(self, sample: measure.Sample) -> str:
        tail = (sample.stderr.strip() or sample.stdout.strip()).splitlines()[-1:] or [""]
        return f"exit {sample.rc}: {tail[0][:200]}"

    def run_fleet_workload(self, w: workloads.Workload, fl) -> WorkloadResult:
        res = WorkloadResult(w)
        base = self.tmp / w.key
        project = base / "project"
        connections = {h: fl.host_entry(h) for h in w.hosts}
        w.write_project(project, fl.hosts_yaml(w.hosts))
        (base / "floor.json").write_text(w.to_json(connections))
        commands: dict[str, tuple[list[str], dict[str, str]] | None] = {
            "release": ([*RELEASE, "-C", str(project), "apply", "v1", "-y",
                         "--parallelism", str(w.parallelism)], RELEASE_ENV),
            "floor": ([sys.executable, str(ROOT / "bench" / "floor.py"), str(base / "floor.json"),
                       str(base / "floor-steps.json")], {}),
        }
        if self.args.no_ansible:
            res.tools["ansible"] = ToolRuns(missing="not run (--no-ansible)")
        else:
            tools.write_ansible(w, base / "ansible", connections)
            commands["ansible"] = tools.ansible_command(base / "ansible")
        if self.args.no_pyinfra:
            res.tools["pyinfra"] = ToolRuns(missing="not run (--no-pyinfra)")
        else:
            tools.write_pyinfra(w, base / "pyinfra", connections)
            commands["pyinfra"] = tools.pyinfra_command(w, base / "pyinfra")
        order = []
        for name, cmd in commands.items():
            if cmd is None:
                res.tools[name] = ToolRuns(missing="not installed (pip install -e '.[bench]')")
            else:
                res.tools[name] = ToolRuns()
                order.append(name)

        dispatch: list[float] = []
        journal: list[float] = []
        floor_steps: list[float] = []

        def once(name: str, record: bool) -> None:
            cmd, env = commands[name]  # type: ignore[misc]
            shutil.rmtree(project / ".release", ignore_errors=True)  # a fresh journal each run
            sample = measure.run(cmd, cwd=base, env=env)
            runs = res.tools[name]
            if sample.rc != 0:
                runs.failures.append(self._failure(sample))
                print(f"  {w.key} {name}: FAILED {runs.failures[-1]}", file=sys.stderr)
            elif record:
                runs.walls.append(sample.wall)
                runs.rss.append(sample.maxrss_mb)
                if name == "release":
                    self._overheads(project, w, dispatch, journal)
                if name == "floor":
                    floor_steps.extend(json.loads((base / "floor-steps.json").read_text()))
            print(f"  {w.key} {name:<8} {sample.wall:6.2f} s{'' if record else ' (warm-up)'}", file=sys.stderr)
            if name == "ansible":
                tools.ansible_reset(base / "ansible")
            fl.clear_homes()

        for _ in range(self.args.warmup):
            for name in order:
                once(name, record=False)
        for i in range(self.args.runs):
            k = i % len(order)
            for name in order[k:] + order[:k]:
                once(name, record=True)
        res.dispatch, res.journal, res.floor_steps = spread(dispatch), spread(journal), spread(floor_steps)
        if self.args.profile and w.key in ("b", "c"):
            self._profile(w, project, base, res)
            fl.clear_homes()
        return res

    def _overheads(self, project: Path, w: workloads.Workload, dispatch: list[float], journal: list[float]) -> None:
        """Each step's time beyond its own `sleep`: from the run's JSONL log (the command's slot
        taken -> outcome durable) and from the journal's step rows (intent -> outcome)."""
        durations = {s.name: s.duration for s in w.services}
        starts: dict[tuple[str, str], dt.datetime] = {}
        for log in (project / ".release" / "logs").glob("*.jsonl"):
            for line in log.read_text().splitlines():
                e = json.loads(line)
                key = (e.get("node"), e.get("host"))
                if e.get("event") == "deploy.start":
                    starts[key] = dt.datetime.fromisoformat(e["ts"])
                elif e.get("event") == "deploy.done" and key in starts:
                    took = (dt.datetime.fromisoformat(e["ts"]) - starts[key]).total_seconds()
                    dispatch.append(took - durations[key[0]])
        db = project / ".release" / "journal.db"
        if db.exists():
            with sqlite3.connect(db) as conn:
                rows = conn.execute("select node, started_at, ended_at from steps "
                                    "where kind = 'service' and status = 'ok'").fetchall()
            journal.extend(end - start - durations[node] for node, start, end in rows)

    def _profile(self, w: workloads.Workload, project: Path, base: Path, res: WorkloadResult) -> None:
        shutil.rmtree(project / ".release", ignore_errors=True)
        res.profile_note, res.profile = self.profile(
            f"`release apply` of ({w.key})", ["-C", str(project), "apply", "v1", "-y", "--parallelism",
                                             str(w.parallelism)], base, f"profile-{w.key}")

    def profile(self, what: str, release_args: list[str], cwd: Path, name: str) -> tuple[str, list[str] | None]:
        """One more run of `release` under py-spy (the thread holding the GIL, 200 samples a second):
        a note and the summary's lines."""
        spy = tools.executable("py-spy")
        if spy is None:
            return "py-spy not installed (pip install py-spy)", None
        raw = cwd / f"{name}.txt"
        cmd = [spy, "record", "--gil", "--format", "raw", "--rate", str(PROFILE_RATE), "-o", str(raw), "--",
               *RELEASE, *release_args]
        sample = measure.run(cmd, cwd=cwd, env=RELEASE_ENV)
        if sample.rc != 0 or not raw.exists():
            return f"py-spy failed: {self._failure(sample)}", None
        if self.args.profile_dir:
            Path(self.args.profile_dir).mkdir(parents=True, exist_ok=True)
            shutil.copy(raw, Path(self.args.profile_dir) / raw.name)
        prof = parse_profile(raw)
        busy = prof.samples / PROFILE_RATE / sample.wall if sample.wall else 0
        note = (f"{what} once more under `py-spy record --gil --rate {PROFILE_RATE}`: wall {sample.wall:.2f} s, "
                f"{prof.samples} samples of the thread holding the GIL (Python running {busy:.0%} of the "
                f"wall time); shares are of those samples")
        return note, report.profile_lines(prof)

    def interleaved(self, commands: dict[str, list[str]], warm: list[str]) -> dict:
        """--warmup rounds of the commands in `warm` (unmeasured), then --runs rounds of all of
        them, the order rotating by one each round: times, peak RSS and failures per command."""
        keys = list(commands)
        rounds = [warm] * self.args.warmup
        rounds += [keys[i % len(keys):] + keys[:i % len(keys)] for i in range(self.args.runs)]
        out: dict = {"times": {k: [] for k in keys}, "rss": {k: [] for k in keys}, "failures": {}}
        for i, now in enumerate(rounds):
            for k in now:
                s = measure.run(commands[k], cwd=self.tmp, env=RELEASE_ENV)
                if s.rc != 0:
                    out["failures"][k] = self._failure(s)
                elif i >= self.args.warmup:
                    out["times"][k].append(s.wall)
                    out["rss"][k].append(s.maxrss_mb)
                print(f"  {k:<44} {s.wall:6.2f} s{'' if i >= self.args.warmup else ' (warm-up)'}", file=sys.stderr)
        return out

    # -- plan-only ------------------------------------------------------------------------

    def run_plans(self) -> dict:
        sizes = [int(x) for x in self.args.plan_sizes.split(",")]
        verbs = {"validate": ["validate"], "plan": ["plan", "v1"], "plan --json": ["plan", "v1", "--json"]}
        commands = {}
        for n in sizes:
            w = workloads.plan_only(n)
            project = self.tmp / f"d{n}"
            w.write_project(project, workloads.local_hosts_yaml(w.hosts))
            for verb, words in verbs.items():
                commands[report.plan_key(n, verb)] = [*RELEASE, "-C", str(project), *words]
        # What every validate pays whatever the graph, timed among the others (the load changes).
        base = self.tmp / "d-base"
        workloads.plan_only(report.PLAN_BASE_SIZE).write_project(base, workloads.local_hosts_yaml(w.hosts))
        commands[report.PLAN_BASE] = [*RELEASE, "-C", str(base), "validate"]
        # The warm-up (byte-code and page caches) needs no large graph.
        result = self.interleaved(commands, [report.plan_key(sizes[0], v) for v in verbs])
        result.update(sizes=sizes, commands=list(verbs), profile=[None, None])
        if self.args.profile:
            n = sizes[-1]
            result["profile"] = self.profile(f"`release validate` of {n:,} services",
                                             ["-C", str(self.tmp / f"d{n}"), "validate"], self.tmp,
                                             f"profile-d{n}-validate")
        return result

    # -- start-up -------------------------------------------------------------------------

    def run_startup(self) -> dict:
        demo = self.tmp / "demo"
        shutil.copytree(ROOT / "services.d", demo / "services.d")
        shutil.copytree(ROOT / "migrations", demo / "migrations")
        setup = measure.run([*RELEASE, "-C", str(demo), "apply", "v2.3", "-y"], cwd=self.tmp, env=RELEASE_ENV)
        status = "release status (demo, after apply v2.3)"
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import typer'": [sys.executable, "-c", "import typer"],
            "release --help": [*RELEASE, "--help"],
            status: [*RELEASE, "-C", str(demo), "status"],
            report.DEMO_VALIDATE: [*RELEASE, "-C", str(demo), "validate"],
        }
        result = self.interleaved(commands, list(commands))
        if setup.rc != 0:
            result["failures"][status] = "demo apply failed: " + self._failure(setup)
        if self.args.profile:
            s = measure.run([sys.executable, "-X", "importtime", *RELEASE[1:], "--help"], cwd=self.tmp, env=RELEASE_ENV)
            result["imports"] = import_times(s.stderr)
        return result


# -- main -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=8, help="sshd hosts in the fleet (64 for workload c)")
    ap.add_argument("--runs", type=int, default=5, help="measured runs of each tool (medians)")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured runs of each tool first")
    ap.add_argument("--workloads", default="a,b,c,d", help="any of a,b,c (sshd fleet) and d (plan only)")
    ap.add_argument("--plan-sizes", default=",".join(map(str, workloads.PLAN_SIZES)),
                    help="services in the plan-only graphs of workload d")
    ap.add_argument("--no-ansible", action="store_true", help="leave Ansible out")
    ap.add_argument("--no-pyinfra", action="store_true", help="leave pyinfra out")
    ap.add_argument("--profile", action="store_true", help="one more `release apply` of b and c under py-spy")
    ap.add_argument("--profile-dir", help="keep py-spy's raw stacks there")
    ap.add_argument("--keep", action="store_true", help="keep the generated projects, playbooks and logs")
    ap.add_argument("--render", metavar="JSON", help="only write --out again from a saved RESULTS.json")
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"), help="the results file")
    args = ap.parse_args(argv)
    args.workloads = [x.strip() for x in args.workloads.split(",") if x.strip()]
    unknown = set(args.workloads) - {"a", "b", "c", "d"}
    if unknown:
        ap.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        state = json.loads(Path(args.render).read_text())
    else:
        # A plain `kill` must tear the fleet down too: turn SIGTERM into an exception.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        state = measure_all(args, "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).with_suffix(".json").write_text(json.dumps(state, separators=(",", ":")) + "\n")
    Path(args.out).write_text(report.render(state))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def measure_all(args: argparse.Namespace, command: str) -> dict:
    """Everything asked for, as one JSON-able record (RESULTS.json beside RESULTS.md)."""
    state: dict = {"command": command, "started": dt.datetime.now().astimezone().isoformat(timespec="minutes"),
                   "machine": machine(), "runs": args.runs, "warmup": args.warmup, "load": [os.getloadavg()],
                   "results": [], "plans": None, "startup": None}
    results: list[WorkloadResult] = []
    # An installed package has its bytecode compiled by pip; an editable checkout run with
    # PYTHONDONTWRITEBYTECODE would compile every module at every start (a tenth of a second).
    compileall.compile_dir(str(ROOT / "orchestrator"), quiet=1)
    tmp = Path(tempfile.mkdtemp(prefix="release-bench-"))
    try:
        bench = Bench(args, tmp)
        wanted = [k for k in FLEET_WORKLOADS if k in args.workloads]
        if wanted:
            fleet = load_fleet()
            sshd = fleet._find_sshd()
            if sshd is None or os.geteuid() != 0:
                sys.exit("workloads a-c need root and OpenSSH's sshd (apt-get install openssh-server); "
                         "run --workloads d alone without them")
            fl = fleet.Fleet(args.hosts)
            try:
                fl.start(sshd)
                print(f"fleet: {args.hosts} sshd hosts up in {fl.startup_seconds:.1f} s", file=sys.stderr)
                for key in wanted:
                    w = {"a": workloads.even, "b": workloads.uneven, "c": workloads.wide}[key](fl.names)
                    if key == "c" and len(fl.names) < WIDE_HOSTS:
                        results.append(WorkloadResult(w, skipped=f"needs --hosts {WIDE_HOSTS} (this run had {args.hosts})"))
                        continue
                    print(f"workload {key}: {w.describe()}", file=sys.stderr)
                    results.append(bench.run_fleet_workload(w, fl))
            finally:
                fl.stop()
        if "d" in args.workloads:
            state["plans"] = bench.run_plans()
        state["startup"] = bench.run_startup()
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    state["results"] = [asdict(r) for r in results]
    state["load"].append(os.getloadavg())
    return state


def machine() -> dict[str, str]:
    info = {"nproc": str(os.cpu_count()), "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split()[1]
        info["memory"] = f"{int(mem) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    info["os"] = platform.platform()
    versions = []
    for mod in ("asyncssh", "ansible-core", "pyinfra"):
        try:
            from importlib.metadata import version

            versions.append(f"{mod} {version(mod)}")
        except Exception:
            versions.append(f"{mod} not installed")
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
    versions.append((ssh.stderr or ssh.stdout).strip().split(",")[0])
    info["versions"] = ", ".join(versions)
    return info


if __name__ == "__main__":
    sys.exit(main())
