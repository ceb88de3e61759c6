"""The `release` commands: typer parses the arguments, `orchestrator.commands` does the work,
`cli_output` prints the answer (one JSON document with --json, text otherwise)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from .cli_output import (error, local_time, one_line, print_history, print_json, print_release, print_revert_plan,
                         print_run, print_sql, print_status, say, sql_json)
from .console import write_console
from .errors import ReleaseError
from .lazy import lazy_module
from .scope import Scope

# Plain help: typer's rich panels print a `<bool>` type beside every flag, which takes no value.
app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Release a system of services and databases in dependency order; revert it exactly.")


class Options:
    """The global options of this invocation, set by the callback before any command runs."""

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


def _interactive() -> bool:
    """Whether to ask before changing anything: on a terminal, without -y or --json."""
    return not (opts.yes or opts.json or not sys.stdin.isatty())


def _print_run(result: commands.RunResult) -> None:
    if opts.json:
        print_json(result.to_json())
    else:
        print_run(result)


@app.command()
def validate() -> None:
    """Load and check all manifests and migrations; touches nothing."""
    project = commands.validate(opts.project_dir)
    if opts.json:
        print_json({"valid": True, "nodes": sorted(project.nodes)})
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
        print_json(p.to_json())
    else:
        say(plans.render(p))
    if detailed_exitcode and p.changes:
        raise typer.Exit(2)


def _print_sql(rendered: dict[str, list[Any]]) -> None:
    """Each revision's SQL under a header naming it; one that cannot be rendered offline gets a
    comment saying why. Exit 1 only when there were revisions and none could be rendered."""
    if opts.json:
        print_json(sql_json(rendered))
    else:
        print_sql(rendered)
    parts = [r for rs in rendered.values() for r in rs]
    if parts and all(r.sql is None for r in parts):
        error("no revision could be rendered offline")
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
    say(plans.render(p))
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
        print_json(rp)
        return True
    if rp.get("nothing_to_revert"):
        print(one_line(rp["nothing_to_revert"]))
        return True
    print_revert_plan(rp)
    if dry_run:
        print("Dry run: nothing was changed.")
        return True
    when = local_time(rp["started_at"], "%Y-%m-%d %H:%M")
    if not typer.confirm(f"Revert release {rp['release']} ({rp['state']} {when})?", default=False):
        raise typer.Exit(1)
    return False


@app.command()
def status(live: bool = typer.Option(False, "--live", help="Also ask the hosts' probes and the databases.")) -> None:
    """The latest release, its state, each service's version per host, each database's revision."""
    st = queries.status(opts.project_dir, journal=opts.journal, live=live)
    if opts.json:
        print_json(st)
    else:
        print_status(st, live)


@app.command()
def history(limit: int = typer.Option(50, "--limit", min=1, metavar="N", help="At most N releases.")) -> None:
    """Releases, newest first, with state and times."""
    rows = queries.history(opts.project_dir, journal=opts.journal, limit=limit)
    if opts.json:
        print_json(rows)
    else:
        print_history(rows)


@app.command()
def show(name: Optional[str] = typer.Argument(None, help="A release name (default: the latest release).")) -> None:
    """One release from the journal: who ran it, when, and every step with its outcome."""
    rec = queries.show(opts.project_dir, name, journal=opts.journal)
    if opts.json:
        print_json(rec)
    else:
        print_release(rec)


@app.command()
def schema(kind: str = typer.Option("all", "--kind", metavar="KIND",
                                    help="all, node, service, database, inventory or settings.")) -> None:
    """The JSON Schema of the manifests, for editors and checks in CI."""
    # Not through print_json: this is no journal data to mask (and `secrets` is a field name here).
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
