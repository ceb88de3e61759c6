"""The `release` command line: parses arguments, calls `orchestrator.commands`, prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from . import commands
from .errors import ReleaseError
from .logs import configure
from .plan import Plan, render
from .secrets import mask_text, mask_value

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
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


@app.callback()
def _global(
    project_dir: Path = typer.Option(Path("."), "-C", "--project-dir", help="The release repository."),
    journal: Optional[str] = typer.Option(None, "--journal", envvar="RELEASE_JOURNAL",
                                          help="Journal URL (sqlite:///... or postgresql://...)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    yes: bool = typer.Option(False, "-y", "--yes", help="Do not ask for confirmation."),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="More log output."),
    log_format: str = typer.Option("console", "--log-format", help="console or json (logs on stderr)."),
) -> None:
    if log_format not in ("console", "json"):
        raise typer.BadParameter("must be console or json", param_hint="--log-format")
    opts.project_dir, opts.journal, opts.json, opts.yes, opts.verbose = project_dir, journal, json_out, yes, verbose
    configure(verbose, log_format)


def _out(data: Any) -> None:
    sys.stdout.write(json.dumps(mask_value(data), indent=2, default=str) + "\n")


def _confirm(question: str) -> None:
    if opts.yes or opts.json or not sys.stdin.isatty():
        return
    if not typer.confirm(question, default=False):
        raise typer.Exit(1)


def _print_run(result: commands.RunResult) -> None:
    if opts.json:
        _out(result.to_json())
        return
    for s in result.steps:
        if s.outcome != "ok":
            where = f"{s.node}@{s.host}" if s.host else s.node
            print(f"  {s.outcome:<8} {s.action:<9} {where}" + (f": {s.detail}" if s.detail else ""))
    print(result.message)


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
    force: list[str] = typer.Option([], "--force", help="Redeploy NODE even if unchanged (repeatable)."),
) -> None:
    """The dry run: what would change, in which order and waves. Creates nothing."""
    try:
        if sql:
            _print_sql(commands.plan_sql(opts.project_dir, name, journal=opts.journal))
            return
        p = commands.plan(opts.project_dir, name, journal=opts.journal, force=tuple(force))
    except ReleaseError as exc:
        if detailed_exitcode:  # Terraform's convention: 1 for any error, 2 means "changes"
            sys.stderr.write(f"error: {exc}\n")
            raise typer.Exit(1)
        raise
    if opts.json:
        _out(p.to_json())
    else:
        print(render(p))
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
                    print(f"-- {db}: {r.label}: not rendered: {' '.join(str(r.error).split())}\n")
                else:
                    print(f"-- {db}: {r.label}\n{r.sql}")
    parts = [r for rs in rendered.values() for r in rs]
    if parts and all(r.sql is None for r in parts):
        sys.stderr.write("error: no revision could be rendered offline\n")
        raise typer.Exit(1)


@app.command()
def apply(
    name: str = typer.Argument(..., help="The release name, e.g. v2.3."),
    parallelism: int = typer.Option(16, "--parallelism", min=1, help="Commands running at once."),
    auto_revert: bool = typer.Option(False, "--auto-revert", help="Revert by itself when a step fails."),
    force: list[str] = typer.Option([], "--force", help="Redeploy NODE even if unchanged (repeatable)."),
    force_release: bool = typer.Option(False, "--force-release",
                                       help="Apply although the latest release is failed or interrupted."),
    lock_wait: float = typer.Option(0.0, "--lock-wait", help="Seconds to wait for the release lock."),
) -> None:
    """Run the plan: migrations before their dependents, services in dependency order."""
    result = commands.apply(opts.project_dir, name, journal=opts.journal, parallelism=parallelism,
                            force=tuple(force), force_release=force_release, auto_revert=auto_revert,
                            lock_wait=lock_wait, confirm=_confirm_plan)
    _print_run(result)


def _confirm_plan(p: Plan) -> bool:
    """On a terminal, show the plan that is about to run and ask (unless -y or --json)."""
    if opts.yes or opts.json or not sys.stdin.isatty():
        return True
    print(render(p))
    return typer.confirm(f"Apply release {p.release}?", default=False)


@app.command()
def revert(
    parallelism: int = typer.Option(16, "--parallelism", min=1, help="Commands running at once."),
    force: bool = typer.Option(False, "--force", help="Skip schema downgrades that cannot run."),
    lock_wait: float = typer.Option(0.0, "--lock-wait", help="Seconds to wait for the release lock."),
) -> None:
    """Undo the latest release from the journal, dependents first."""
    _confirm("Revert the latest release?")
    result = commands.revert(opts.project_dir, journal=opts.journal, parallelism=parallelism, force=force,
                             lock_wait=lock_wait)
    _print_run(result)


@app.command()
def status(live: bool = typer.Option(False, "--live", help="Also ask the hosts' probes and the databases.")) -> None:
    """The latest release, its state, each service's version per host, each database's revision."""
    st = commands.status(opts.project_dir, journal=opts.journal, live=live)
    if opts.json:
        _out(st)
        return
    for w in st.get("warnings", []):
        sys.stderr.write(f"warning: {mask_text(w)}\n")
    revert = (f" (revert {st['revert_state']}: run `release revert` to finish it)"
              if st.get("revert_state") else "")
    print(f"release: {st['release'] or '(none)'}  state: {st['state'] or '-'}{revert}")
    names = [*st["services"], *st["databases"], *st.get("live", {})]
    width = max([16, *map(len, names)]) + 1
    for svc, hosts in sorted(st["services"].items()):
        print(f"  {svc:<{width}}" + ", ".join(f"{h}={v}" for h, v in sorted(hosts.items())))
    for db, rev in sorted(st["databases"].items()):
        now = st.get("live_databases", {}).get(db, rev)
        extra = f" (live: {now or 'unreachable or empty'})" if live and now != rev else ""
        print(f"  {db:<{width}}revision {rev or '(empty)'}{extra}")
    for d in st.get("drift", []):
        print(f"  drift: {d['node']}@{d['host']}: journal says {d['journal'] or 'nothing'}, "
              f"the host reports {d['live'] or 'nothing'}")


@app.command()
def history(limit: int = typer.Option(50, "--limit", min=1)) -> None:
    """Releases, newest first, with state and times."""
    rows = commands.history(opts.project_dir, journal=opts.journal, limit=limit)
    if opts.json:
        _out(rows)
        return
    import time as _t

    for r in rows:
        started = _t.strftime("%Y-%m-%d %H:%M:%S", _t.localtime(r["started_at"]))
        extra = f" (revert {r['revert_state']})" if r["revert_state"] and r["state"] != "reverted" else ""
        print(f"{r['release']:<12} {r['state']:<12} {started}{extra}")
    if not rows:
        print("no releases yet")


@app.command()
def graph(
    fmt: str = typer.Option("text", "--format", help="text, dot, mermaid, svg or png."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write to a file (svg/png need it on a terminal)."),
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
    """Global options may come after the command (SPEC §4): move them in front of it."""
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


def main(argv: list[str] | None = None) -> int:
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    try:
        # Without standalone mode click hands back typer.Exit's code instead of raising it.
        rc = app(args=args, prog_name="release", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except ReleaseError as exc:
        if opts.json and getattr(exc, "result", None) is not None:
            _out(exc.result.to_json())  # type: ignore[union-attr]
        sys.stderr.write(f"error: {mask_text(str(exc))}\n")
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
            return 1 if "--detailed-exitcode" in args else int(exc.exit_code)
        if isinstance(exc, OSError):
            sys.stderr.write(f"error: {mask_text(str(exc))}\n")
            return 1
        # A bug: say so in one line; the traceback is in the run's log file when one was open.
        sys.stderr.write(f"error: internal error: {type(exc).__name__}: {mask_text(str(exc))}\n")
        return 1


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
