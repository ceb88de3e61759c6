"""The `release` command line: parses arguments, calls `orchestrator.commands`, prints."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import typer

from .errors import ReleaseError
from .lazy import lazy_module
from .console import guard_stream, write_console
from .scope import Scope
from .secrets import mask_text, mask_value
from .terminal import printable

# Plain help: typer's rich panels print a `<bool>` type beside every flag, which takes no value.
app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Release a system of services and databases in dependency order; revert it exactly.")

GLOBAL_VALUE_OPTIONS = {"-C", "--project-dir", "--journal", "--log-format"}
GLOBAL_FLAGS = {"--json", "-y", "--yes", "-v", "-vv", "-vvv", "--verbose"}


class Options:
    def __init__(self) -> None:
        self.project_dir = Path(".")
        self.journal: str | None = None
        self.json = False
        self.yes = False
        self.verbose = 0


opts = Options()
# Imported on first use: `release --help` must not pay for Alembic, SQLAlchemy and networkx.
commands = lazy_module("orchestrator.commands")
logs = lazy_module("orchestrator.logs")
queries = lazy_module("orchestrator.queries")  # status, history, show: no Alembic, no networkx
plans = lazy_module("orchestrator.plan")


def _version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"release {version('release-orchestrator')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            print("release (version unknown: not installed)")
        raise typer.Exit(0)


@app.callback()
def _global(
    project_dir: Path = typer.Option(Path("."), "-C", "--project-dir", metavar="DIR",
                                     help="The release repository."),
    journal: Optional[str] = typer.Option(None, "--journal", envvar="RELEASE_JOURNAL", metavar="URL",
                                          help="Journal URL (sqlite:///... or postgresql://...)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    yes: bool = typer.Option(False, "-y", "--yes", help="Do not ask for confirmation."),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, show_default=False,
                                 help="More log output (-vv, -vvv: more still)."),
    log_format: str = typer.Option("console", "--log-format", metavar="console|json",
                                   help="console or json (logs on stderr)."),
    _show_version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="Print the version and exit."),
) -> None:
    if log_format not in ("console", "json"):
        raise typer.BadParameter("must be console or json", param_hint="--log-format")
    opts.project_dir, opts.journal, opts.json, opts.yes, opts.verbose = project_dir, journal, json_out, yes, verbose
    logs.configure(verbose, log_format)


def _out(data: Any) -> None:
    sys.stdout.write(json.dumps(mask_value(data), indent=2, default=str) + "\n")


def _say(text: str) -> None:
    """Human output on stdout: it carries versions that hosts reported, SQL and messages from
    migration scripts, so control characters are shown escaped (line breaks stay). A reader that
    went away drops it, never the release."""
    write_console(sys.stdout, printable(text, lines=True) + "\n")


def _error(text: str, prefix: str = "error") -> None:
    sys.stderr.write(f"{prefix}: {printable(mask_text(text), lines=True)}\n")


def _interactive() -> bool:
    """Whether to ask before changing anything: on a terminal, without -y or --json."""
    return not (opts.yes or opts.json or not sys.stdin.isatty())


def _printable(text: object) -> str:
    """Text from the journal (a command's stderr, a message) as one terminal line: control
    characters written as escapes, so that escape sequences cannot take over the terminal."""
    return printable(mask_text(str(text)))


def _table(rows: list[list[str]]) -> list[str]:
    """Rows as left-aligned columns (the first row is the header), each cell made printable."""
    cells = [[_printable(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]


def _local(iso: str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A journal time (ISO 8601, UTC) in this machine's time zone."""
    if iso is None:
        return "-"
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime(fmt)


def _took(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _print_run(result: commands.RunResult) -> None:
    if opts.json:
        _out(result.to_json())
        return
    for s in result.steps:
        if s.outcome != "ok":
            # A detail carries a command's stderr: one line, whatever the command printed.
            _say(mask_text(f"  {s.outcome:<8} {s.action:<9} {s.where}") + (f": {printable(mask_text(s.detail))}" if s.detail else ""))
    _say(mask_text(result.message))


@app.command()
def validate() -> None:
    """Load and check all manifests and migrations; touches nothing."""
    project = commands.validate(opts.project_dir)
    if opts.json:
        _out({"valid": True, "nodes": sorted(project.nodes)})
    else:
        print(f"ok: {len(project.services)} services, {len(project.databases)} databases, "
              f"{len(project.inventory.hosts)} hosts")


@app.command()
def plan(
    name: str = typer.Argument(..., help="The release name, e.g. v2.3."),
    detailed_exitcode: bool = typer.Option(False, "--detailed-exitcode", help="Exit 2 when something would change."),
    sql: bool = typer.Option(False, "--sql", help="Print the SQL the migrations would run."),
    force: list[str] = typer.Option([], "--force", metavar="NODE",
                                    help="Redeploy NODE even if unchanged (repeatable)."),
    target: list[str] = typer.Option([], "--target", help="Change only NODE and what it depends on (repeatable)."),
    limit: list[str] = typer.Option([], "--limit", help="Change only these hosts or groups (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Save the plan for `apply --plan FILE`."),
) -> None:
    """The dry run: what would change, in which order and waves. Creates nothing."""
    try:
        if sql:
            _print_sql(commands.plan_sql(opts.project_dir, name, journal=opts.journal))
            return
        p = commands.plan(opts.project_dir, name, journal=opts.journal, force=tuple(force),
                          scope=Scope(tuple(target), tuple(limit)), out=out)
    except ReleaseError as exc:
        if detailed_exitcode:  # Terraform's convention: 1 for any error, 2 means "changes"
            exc.exit_code = 1
        raise
    if opts.json:
        _out(p.to_json())
    else:
        _say(plans.render(p))
    if detailed_exitcode and p.changes:
        raise typer.Exit(2)


def _print_sql(rendered: dict[str, list[Any]]) -> None:
    """Each revision's SQL under a header naming it; one that cannot be rendered offline gets a
    comment saying why. Exit 1 only when there were revisions and none could be rendered."""
    if opts.json:
        _out({db: [{"revision": r.revision, "file": r.file, "sql": r.sql, "error": r.error} for r in parts]
              for db, parts in rendered.items()})
    else:
        for db, parts in rendered.items():
            for r in parts:
                if r.sql is None:
                    _say(f"-- {db}: {r.label}: not rendered: {' '.join(str(r.error).split())}\n")
                else:
                    _say(f"-- {db}: {r.label}\n{r.sql}")
    parts = [r for rs in rendered.values() for r in rs]
    if parts and all(r.sql is None for r in parts):
        _error("no revision could be rendered offline")
        raise typer.Exit(1)


@app.command()
def apply(
    name: Optional[str] = typer.Argument(None, help="The release name, e.g. v2.3 (not with --plan)."),
    plan_file: Optional[Path] = typer.Option(None, "--plan", help="Run exactly this saved plan (plan --out)."),
    parallelism: int = typer.Option(16, "--parallelism", min=1, help="Commands running at once."),
    auto_revert: bool = typer.Option(False, "--auto-revert", help="Revert by itself when a step fails."),
    force: list[str] = typer.Option([], "--force", help="Redeploy NODE even if unchanged (repeatable)."),
    force_release: bool = typer.Option(False, "--force-release",
                                       help="Apply although the latest release is failed or interrupted."),
    lock_wait: float = typer.Option(0.0, "--lock-wait", help="Seconds to wait for the release lock."),
    target: list[str] = typer.Option([], "--target", help="Change only NODE and what it depends on (repeatable)."),
    limit: list[str] = typer.Option([], "--limit", help="Change only these hosts or groups (repeatable)."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write a JUnit XML report, one test case per step."),
) -> None:
    """Run the plan: migrations before their dependents, services in dependency order."""
    if (name is None) == (plan_file is None):
        raise typer.BadParameter("give a release name or --plan FILE (one of them)")
    result = commands.apply(opts.project_dir, name or "", plan_file=plan_file, journal=opts.journal, parallelism=parallelism,
                            force=tuple(force), force_release=force_release, auto_revert=auto_revert,
                            lock_wait=lock_wait, confirm=_confirm_plan, scope=Scope(tuple(target), tuple(limit)),
                            junit=junit, annotate=_annotate)
    _print_run(result)


def _annotate(line: str) -> None:
    """A GitHub Actions `::error` line: on stdout, or on stderr when stdout is --json's document."""
    write_console(sys.stderr if opts.json else sys.stdout, line + "\n")


def _confirm_plan(p: plans.Plan) -> bool:
    """Show the plan that is about to run (not with --json: stdout is one JSON document); on a
    terminal ask, unless -y. Off a terminal (CI) the log shows what was run before it ran."""
    if opts.json:
        return True
    _say(plans.render(p))
    if opts.yes or not sys.stdin.isatty():
        return True
    return typer.confirm(f"Apply release {p.release}?", default=False)


@app.command()
def revert(
    parallelism: int = typer.Option(16, "--parallelism", min=1, help="Commands running at once."),
    force: bool = typer.Option(False, "--force", help="Skip schema downgrades that cannot run."),
    lock_wait: float = typer.Option(0.0, "--lock-wait", help="Seconds to wait for the release lock."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what it would undo, in which order; change nothing."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write a JUnit XML report, one test case per step."),
) -> None:
    """Undo the latest release from the journal, dependents first."""
    if _revert_preview(dry_run):
        return
    result = commands.revert(opts.project_dir, journal=opts.journal, parallelism=parallelism, force=force,
                             lock_wait=lock_wait, junit=junit, annotate=_annotate)
    _print_run(result)


def _revert_preview(dry_run: bool) -> bool:
    """--dry-run prints the revert plan (True: nothing more to do). On a terminal the plan is
    shown and the release it undoes named before the question; declined: exit 1."""
    if not dry_run and not _interactive():
        return False
    rp = queries.revert_plan(opts.project_dir, journal=opts.journal)
    if dry_run and opts.json:
        _out(rp)
        return True
    if rp.get("nothing_to_revert"):
        print(_printable(rp["nothing_to_revert"]))
        return True
    print(f"revert of release {rp['release']} ({rp['state']}, started {_local(rp['started_at'])}), "
          "dependents first:")
    by_node: dict[str, list[dict[str, Any]]] = {}
    for step in rp["steps"]:
        by_node.setdefault(step["node"], []).append(step)
    for i, wave in enumerate(rp["waves"], 1):
        print(f"wave {i}:")
        for node in wave:
            for s in by_node[node]:
                if s["kind"] == "database":
                    line = f"  {node}: downgrade {s['from'] or 'base'} -> {s['restore'] or 'base'}"
                else:
                    back = s["restore"] or "nothing (the release put the first version there)"
                    line = f"  {node} on {s['host']}: {s['remove'] or '-'} -> {back}"
                print(_printable(line))
    if dry_run:
        print("Dry run: nothing was changed.")
        return True
    when = _local(rp["started_at"], "%Y-%m-%d %H:%M")
    if not typer.confirm(f"Revert release {rp['release']} ({rp['state']} {when})?", default=False):
        raise typer.Exit(1)
    return False


@app.command()
def status(live: bool = typer.Option(False, "--live", help="Also ask the hosts' probes and the databases.")) -> None:
    """The latest release, its state, each service's version per host, each database's revision."""
    st = queries.status(opts.project_dir, journal=opts.journal, live=live)
    if opts.json:
        _out(st)
        return
    for w in st.get("warnings", []):
        _error(w, "warning")
    revert = (f" (revert {st['revert_state']}: run `release revert` to finish it)"
              if st.get("revert_state") else "")
    _say(f"release: {st['release'] or '(none)'}  state: {st['state'] or '-'}{revert}")
    names = [*st["services"], *st["databases"], *st.get("live", {})]
    width = max([16, *map(len, names)]) + 1
    for svc, hosts in sorted(st["services"].items()):
        _say(f"  {svc:<{width}}" + ", ".join(f"{h}={v}" for h, v in sorted(hosts.items())))
    for db, rev in sorted(st["databases"].items()):
        now = st.get("live_databases", {}).get(db, rev)
        extra = f" (live: {now or 'unreachable or empty'})" if live and now != rev else ""
        _say(f"  {db:<{width}}revision {rev or '(empty)'}{extra}")
    for d in st.get("drift", []):
        _say(f"  drift: {d['node']}@{d['host']}: journal says {d['journal'] or 'nothing'}, "
             f"the host reports {d['live'] or 'nothing'}")


@app.command()
def history(limit: int = typer.Option(50, "--limit", min=1, metavar="N", help="At most N releases.")) -> None:
    """Releases, newest first, with state and times."""
    rows = queries.history(opts.project_dir, journal=opts.journal, limit=limit)
    if opts.json:
        _out(rows)
        return
    if not rows:
        print("no releases yet")
        return
    table = [["RELEASE", "STATE", "STARTED", "DURATION", "RUN BY", "COMMIT"]]
    for r in rows:
        revert = f" (revert {r['revert_state']})" if r["revert_state"] and r["state"] != "reverted" else ""
        commit = (r["commit"] or "-")[:12] + (" (dirty)" if r["dirty"] else "")
        table.append([r["release"], r["state"] + revert, _local(r["started_at"]), _took(r["duration"]),
                      r["run_by"] or "-", commit])
    print("\n".join(_table(table)))


@app.command()
def show(name: Optional[str] = typer.Argument(None, help="A release name (default: the latest release).")) -> None:
    """One release from the journal: who ran it, when, and every step with its outcome."""
    rec = queries.show(opts.project_dir, name, journal=opts.journal)
    if opts.json:
        _out(rec)
        return
    revert = f"; revert {rec['revert_state']}" if rec["revert_state"] and rec["state"] != "reverted" else ""
    commit = f" at commit {rec['commit']}" + (" (dirty)" if rec["dirty"] else "") if rec["commit"] else ""
    lines = [f"release {rec['release']}: {rec['state']}{revert}",
             f"run by {rec['run_by'] or 'unknown'}{commit}",
             f"started {_local(rec['started_at'])}, finished {_local(rec['finished_at'])} "
             f"({_took(rec['duration'])})"
             + (f", reverted {_local(rec['reverted_at'])}" if rec["reverted_at"] else "")]
    if rec["previous"]:
        lines.append(f"previous release: {rec['previous']}")
    if rec["message"]:
        lines.append(f"message: {rec['message']}")
    lines += [f"note: {e['event']}: {e['detail']}" for e in rec["events"]]
    print("\n".join(_printable(line) for line in lines))
    if not rec["steps"]:
        print("no steps")
        return
    table = [["PHASE", "NODE", "WHERE", "ACTION", "OUTCOME", "EXIT", "DURATION"]]
    tails: dict[int, list[str]] = {}
    for s in rec["steps"]:
        code = "-" if s["exit_code"] is None else str(s["exit_code"])
        table.append([s["phase"], s["node"], s["host"] or s["revision"] or "-", s["action"], s["outcome"], code,
                      _took(s["duration"])])
        tail = (s["stderr"] or "").strip().splitlines()[-5:]
        if tail:
            tails[len(table) - 1] = tail
    for i, line in enumerate(_table(table)):
        print(line)
        for t in tails.get(i, []):
            print(f"    stderr: {_printable(t)}")


@app.command()
def schema(kind: str = typer.Option("all", "--kind", metavar="KIND",
                                    help="all, node, service, database, inventory or settings.")) -> None:
    """The JSON Schema of the manifests, for editors and checks in CI."""
    # Not through _out: this is no journal data to mask (and `secrets` is a field name here).
    sys.stdout.write(json.dumps(commands.schema(kind), indent=2) + "\n")


@app.command()
def graph(
    fmt: str = typer.Option("text", "--format", metavar="FORMAT", help="text, dot, mermaid, svg or png."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", metavar="FILE",
                                          help="Write to a file (svg/png need it on a terminal)."),
) -> None:
    """The dependency graph with its waves."""
    out = commands.graph(opts.project_dir, fmt)
    data = out if isinstance(out, bytes) else (out + "\n").encode()
    if output:
        output.write_bytes(data)
    else:
        sys.stdout.buffer.write(data)


@app.command()
def unlock(lock_id: str = typer.Argument(..., help="The id shown by the exit-3 message.")) -> None:
    """Remove a stale release lock, only when given its id."""
    commands.unlock(opts.project_dir, lock_id, journal=opts.journal)
    print(f"lock {lock_id} removed")


def hoist_global_options(argv: list[str]) -> list[str]:
    """Global options may come after the command: move them in front of it."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        key = arg.split("=", 1)[0]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if key in GLOBAL_VALUE_OPTIONS:
            if "=" in arg or (arg.startswith("-C") and len(arg) > 2):
                front.append(arg)
            elif i + 1 < len(argv):
                front.extend(argv[i:i + 2])
                i += 1
            else:
                front.append(arg)
        elif arg in GLOBAL_FLAGS:
            front.extend(["-v"] * (len(arg) - 1) if arg.startswith("-vv") else [arg])
        else:
            rest.append(arg)
        i += 1
    return front + rest


def _error_json(message: str, problems: list[str], exit_code: int) -> dict[str, Any]:
    """With --json, invalid input and failures before a run say so on stdout as well."""
    return {"error": {"message": message, "problems": problems, "exit_code": exit_code}}


def main(argv: list[str] | None = None) -> int:
    # A reader that goes away (`release apply v2 | head -1`) drops the output, never the release.
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = guard_stream(sys.stdout), guard_stream(sys.stderr)
    try:
        return _main(argv)
    finally:
        write_console(sys.stdout, "")
        write_console(sys.stderr, "")
        sys.stdout, sys.stderr = saved


def _main(argv: list[str] | None) -> int:
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    opts.__init__()  # type: ignore[misc]  # a second call in one process starts from the defaults
    try:
        # Without standalone mode click hands back typer.Exit's code instead of raising it.
        rc = app(args=args, prog_name="release", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except ReleaseError as exc:
        if opts.json:  # stdout still holds one JSON document: the run so far, or the error
            _out(exc.result.to_json() if exc.result is not None  # type: ignore[attr-defined]
                 else _error_json(exc.message, exc.problems, exc.exit_code))
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as exc:
        # Typer vendors its own click: recognise its usage errors by shape, not by class.
        if type(exc).__name__ == "Abort":
            return 1
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            # Terraform's convention: with --detailed-exitcode, 2 means "changes", any error is 1.
            code = 1 if "--detailed-exitcode" in args else int(exc.exit_code)
            if "--json" in args:  # also when the arguments failed before --json was read
                _out(_error_json(exc.format_message(), [], code))
            return code
        if isinstance(exc, OSError):
            _error(str(exc))
            return 1
        # A bug: say so in one line; the traceback is in the run's log file when one was open.
        _error(f"internal error: {type(exc).__name__}: {exc}")
        return 1


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
