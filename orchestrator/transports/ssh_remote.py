"""What runs on an SSH host around a command: the wrapper that reports the command's process
group, exports the quoted environment and watches the tool's connection, and the kill script.

Everything from a manifest or the command line reaches the remote shell through shlex.quote.
"""

from __future__ import annotations

import re
import shlex

from .base import Command

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KILL_GRACE_STEPS = 10  # x 0.1 s between SIGTERM and SIGKILL


def kill_script(pgids: list[int]) -> str:
    """TERM the process groups, give them a second, then KILL groups and sessions."""
    groups = " ".join(str(int(p)) for p in pgids)
    return (
        f"g='{groups}'; "
        'for p in $g; do kill -TERM -"$p" 2>/dev/null; done; '
        f"i=0; while [ $i -lt {KILL_GRACE_STEPS} ]; do a=; "
        'for p in $g; do kill -0 -"$p" 2>/dev/null && a=1; done; '
        '[ -z "$a" ] && break; sleep 0.1 2>/dev/null || sleep 1; i=$((i+1)); done; '
        'for p in $g; do kill -KILL -"$p" 2>/dev/null; '
        # A child that made its own process group is still in the session.
        'command -v pkill >/dev/null 2>&1 && pkill -KILL -s "$p" 2>/dev/null; done; '
        "exit 0"
    )


# Runs beside the command and reads the channel's stdin, on which the transport writes a line
# every keepalive_interval. When the channel or the connection went away (end of file), or when
# nothing arrived for `silence` seconds (the controller lost its network: sshd may not notice for
# minutes), TERM the command's process group (itself spared), KILL after a second, session too.
# Until then a TERM (the kill channel's) ends it with the rest of the group; the wrapper kills it
# as soon as the command ended, so it never fires after that.
#
# Its start-up runs beside every command, so it is kept to one fork and one exec: bash's `read -t`
# times out without a process per line, where POSIX sh (dash) would need `timeout` and `head` (a
# subshell, two execs and a fork at start, again per heartbeat, and orphans left behind when the
# watcher is killed). Hosts without bash use that loop; without coreutils' `timeout` too, only the
# end of file counts. `command -v` is a builtin: choosing costs no process and no round trip.
# BASH_ENV is emptied so that no startup file runs in the watcher.
def _gone(pgid: str) -> str:
    return (f"trap '' TERM; kill -TERM -{pgid}; sleep 1; "
            f"command -v pkill >/dev/null 2>&1 && pkill -KILL -s {pgid}; kill -KILL -{pgid}")


def watcher(silence: int) -> str:
    in_bash = (f'while read -r -t {silence} l && [ -n "$l" ]; do :; done; ' + _gone('"$1"'))
    return (
        "if command -v bash >/dev/null 2>&1; then "
        f"BASH_ENV= bash -c {shlex.quote(in_bash)} release-watcher $$ <&3 >/dev/null 2>&1 & w=$!; "
        "else { if command -v timeout >/dev/null 2>&1; then "
        f'while l=$(timeout {silence} head -n 1) && [ -n "$l" ]; do :; done; '
        "else while read -r _; do :; done; fi; "
        + _gone("$$") + "; } <&3 >/dev/null 2>&1 & w=$!; fi"
    )


def wrapper(command: Command, marker: str, silence: int) -> str:
    exports = "".join(f"export {k}={shlex.quote(str(v))}; " for k, v in command.env.items())
    return (
        f"printf '%s %s %s\\n' {marker} \"$$\" \"$SHELL\"; "
        "cd || exit 125; "
        # The watcher is the background job, the command the foreground one: a
        # non-interactive shell makes background jobs ignore INT and QUIT, which the
        # command and what it starts must not inherit. It starts before the exports: a
        # variable of the command's (SHELLOPTS, say) must not change how it runs.
        "exec 3<&0; "
        f"{watcher(silence)}; "
        "exec 3<&-; "
        f"{exports}"
        f"/bin/sh -c {shlex.quote(command.script)} </dev/null; s=$?; "
        'kill -KILL "$w" 2>/dev/null; exit "$s"'
    )


def bad_env(command: Command) -> str | None:
    """Why the command cannot be sent as it is (a name a shell cannot export, a NUL byte)."""
    for k, v in command.env.items():
        if not ENV_NAME_RE.match(str(k)):
            return f"invalid environment variable name {k!r}"
        if "\0" in str(v):
            return f"environment variable {k} contains a NUL byte"
    if "\0" in command.script:
        return "the command contains a NUL byte"
    return None
