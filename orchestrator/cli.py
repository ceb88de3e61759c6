"""The `release` command line from argv to exit code: global options may follow the command,
output survives a reader that went away, and every error becomes its exit code (and, with
--json, a JSON document on stdout). The commands are in cli_app, what they print in cli_output."""

from __future__ import annotations

import sys
from typing import Any

import typer

from . import heap
from .cli_app import app, opts
from .cli_output import error, print_json
from .console import guard_stream, write_console
from .errors import ReleaseError

# The global options of cli_app's callback, which argv may give after the command.
GLOBAL_VALUE_OPTIONS = {"-C", "--project-dir", "--journal", "--log-format"}
GLOBAL_FLAGS = {"--json", "-y", "--yes", "-v", "-vv", "-vvv", "--verbose"}


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
            print_json(exc.result.to_json() if exc.result is not None  # type: ignore[attr-defined]
                       else _error_json(exc.message, exc.problems, exc.exit_code))
        error(str(exc))
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
                print_json(_error_json(exc.format_message(), [], code))
            return code
        if isinstance(exc, OSError):
            error(str(exc))
            return 1
        # A bug: say so in one line; the traceback is in the run's log file when one was open.
        error(f"internal error: {type(exc).__name__}: {exc}")
        return 1


def run() -> None:
    heap.for_a_command_line()
    code = main()
    # Freezing what is left spares the interpreter's teardown a collection over every object the
    # imports made (half a second after an apply).
    heap.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
