"""What the `release` command line writes: JSON documents, escaped text and errors, and the text
forms of a run, rendered SQL, a revert plan, status, history and one release."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .console import write_console
from .secrets import mask_text, mask_value
from .terminal import printable

if TYPE_CHECKING:  # imported for types only: `release --help` must not pay for them
    from .migrations import Rendered
    from .runs import RunResult


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(mask_value(data), indent=2, default=str) + "\n")


def say(text: str) -> None:
    """Human output on stdout: it carries versions that hosts reported, SQL and messages from
    migration scripts, so control characters are shown escaped (line breaks stay). A reader that
    went away drops it, never the release."""
    write_console(sys.stdout, printable(text, lines=True) + "\n")


def error(text: str, prefix: str = "error") -> None:
    sys.stderr.write(f"{prefix}: {printable(mask_text(text), lines=True)}\n")


def one_line(text: object) -> str:
    """Text from the journal (a command's stderr, a message) as one terminal line: control
    characters written as escapes, so that escape sequences cannot take over the terminal."""
    return printable(mask_text(str(text)))


def _table(rows: list[list[str]]) -> list[str]:
    """Rows as left-aligned columns (the first row is the header), each cell made printable."""
    cells = [[one_line(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]


def local_time(iso: str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
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


def print_run(result: RunResult) -> None:
    """An apply's or a revert's steps that did not go well, then its message."""
    for s in result.steps:
        if s.outcome != "ok":
            # A detail carries a command's stderr: one line, whatever the command printed.
            say(mask_text(f"  {s.outcome:<8} {s.action:<9} {s.where}") + (f": {printable(mask_text(s.detail))}" if s.detail else ""))
    say(mask_text(result.message))


def sql_json(rendered: dict[str, list[Rendered]]) -> dict[str, list[dict[str, Any]]]:
    return {db: [{"revision": r.revision, "file": r.file, "sql": r.sql, "error": r.error} for r in parts]
            for db, parts in rendered.items()}


def print_sql(rendered: dict[str, list[Rendered]]) -> None:
    """Each revision's SQL under a header naming it; one that cannot be rendered offline gets a
    comment saying why."""
    for db, parts in rendered.items():
        for r in parts:
            if r.sql is None:
                say(f"-- {db}: {r.label}: not rendered: {' '.join(str(r.error).split())}\n")
            else:
                say(f"-- {db}: {r.label}\n{r.sql}")


def print_revert_plan(rp: dict[str, Any]) -> None:
    """The release a revert undoes, then its steps wave by wave, dependents first."""
    print(f"revert of release {rp['release']} ({rp['state']}, started {local_time(rp['started_at'])}), "
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
                print(one_line(line))


def print_status(st: dict[str, Any], live: bool) -> None:
    for w in st.get("warnings", []):
        error(w, "warning")
    revert = (f" (revert {st['revert_state']}: run `release revert` to finish it)"
              if st.get("revert_state") else "")
    say(f"release: {st['release'] or '(none)'}  state: {st['state'] or '-'}{revert}")
    names = [*st["services"], *st["databases"], *st.get("live", {})]
    width = max([16, *map(len, names)]) + 1
    for svc, hosts in sorted(st["services"].items()):
        say(f"  {svc:<{width}}" + ", ".join(f"{h}={v}" for h, v in sorted(hosts.items())))
    for db, rev in sorted(st["databases"].items()):
        now = st.get("live_databases", {}).get(db, rev)
        extra = f" (live: {now or 'unreachable or empty'})" if live and now != rev else ""
        say(f"  {db:<{width}}revision {rev or '(empty)'}{extra}")
    for d in st.get("drift", []):
        say(f"  drift: {d['node']}@{d['host']}: journal says {d['journal'] or 'nothing'}, "
            f"the host reports {d['live'] or 'nothing'}")


def print_history(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no releases yet")
        return
    table = [["RELEASE", "STATE", "STARTED", "DURATION", "RUN BY", "COMMIT"]]
    for r in rows:
        revert = f" (revert {r['revert_state']})" if r["revert_state"] and r["state"] != "reverted" else ""
        commit = (r["commit"] or "-")[:12] + (" (dirty)" if r["dirty"] else "")
        table.append([r["release"], r["state"] + revert, local_time(r["started_at"]), _took(r["duration"]),
                      r["run_by"] or "-", commit])
    print("\n".join(_table(table)))


def print_release(rec: dict[str, Any]) -> None:
    """One release: who ran it and when, its notes, then every step with its stderr's tail."""
    revert = f"; revert {rec['revert_state']}" if rec["revert_state"] and rec["state"] != "reverted" else ""
    commit = f" at commit {rec['commit']}" + (" (dirty)" if rec["dirty"] else "") if rec["commit"] else ""
    lines = [f"release {rec['release']}: {rec['state']}{revert}",
             f"run by {rec['run_by'] or 'unknown'}{commit}",
             f"started {local_time(rec['started_at'])}, finished {local_time(rec['finished_at'])} "
             f"({_took(rec['duration'])})"
             + (f", reverted {local_time(rec['reverted_at'])}" if rec["reverted_at"] else "")]
    if rec["previous"]:
        lines.append(f"previous release: {rec['previous']}")
    if rec["message"]:
        lines.append(f"message: {rec['message']}")
    lines += [f"note: {e['event']}: {e['detail']}" for e in rec["events"]]
    print("\n".join(one_line(line) for line in lines))
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
            print(f"    stderr: {one_line(t)}")
