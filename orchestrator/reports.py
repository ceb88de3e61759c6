"""Reports of a finished apply or revert for CI: JUnit XML (`--junit FILE`) and, under GitHub
Actions (`GITHUB_ACTIONS=true`), an `::error` annotation per failed step and a Markdown summary
appended to the file named by `GITHUB_STEP_SUMMARY`. Written for a failed run as well; secrets
masked everywhere.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .console import write_console
from .logs import get_logger
from .secrets import mask_text
from .steps import StepReport

if TYPE_CHECKING:
    from .runs import RunResult

Annotate = Callable[[str], None]
# Steps of these actions in an apply's result are its auto-revert's: a run of their own.
REVERT_ACTIONS = ("revert", "downgrade")
# Actions that are not the one change of their node and host (a soak watches hosts already changed).
_PRIMARY = ("deploy", "migrate", "revert", "downgrade", "none")
# Emoji shortcodes, as Slack and GitHub's Markdown both render them.
ICON = {"started": ":rocket:", "applied": ":white_check_mark:", "failed": ":x:", "interrupted": ":warning:",
        "reverted": ":leftwards_arrow_with_hook:", "revert_failed": ":x:"}


def event_of(result: RunResult, phase: str) -> str:
    """The event a finished run is: applied, failed, interrupted, reverted or revert_failed."""
    if phase == "apply" or result.state in ("reverted", "interrupted"):
        return str(result.state)
    return "revert_failed"


def headline(event: str, release: str, phase: str, project: str | None = None) -> str:
    """`:x: release v2.5 failed`, `:x: revert of release v2.5 failed`, `:rocket: [shop] release v2.5 started`."""
    if event == "revert_failed" or (event == "interrupted" and phase == "revert"):
        head = f"revert of release {release} {event.removeprefix('revert_')}"
    else:
        head = f"release {release} {event}"
    return " ".join(filter(None, [ICON.get(event), f"[{project}]" if project else None, head]))


def _phase(step: StepReport, phase: str) -> str:
    return "revert" if step.action in REVERT_ACTIONS else phase


def case_name(step: StepReport) -> str:
    """`orders@app2`, `orders-db (o3_status)`; `orders@app1 (soak)` for a watch after the deploys."""
    return step.label if step.action in _PRIMARY else f"{step.label} ({step.action})"


def junit(result: RunResult, phase: str) -> ET.ElementTree:
    """One testsuite per run (an apply, its auto-revert), one test case per step."""
    runs: dict[str, list[StepReport]] = {}
    for s in result.steps:
        runs.setdefault(_phase(s, phase), []).append(s)
    root = ET.Element("testsuites", name=f"release {result.release}")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    for run_phase, steps in (runs or {phase: []}).items():
        suite = ET.SubElement(root, "testsuite", name=f"release {result.release}: {run_phase}",
                              tests=str(len(steps)), errors="0",
                              failures=str(sum(s.outcome == "failed" for s in steps)),
                              skipped=str(sum(s.outcome == "skipped" for s in steps)),
                              time=f"{sum(s.duration for s in steps):.3f}", timestamp=stamp,
                              hostname=socket.gethostname())
        for s in steps:
            case = ET.SubElement(suite, "testcase", name=case_name(s), classname=s.node, time=f"{s.duration:.3f}")
            if s.outcome == "failed":
                failure = ET.SubElement(case, "failure", message=mask_text(s.why), type=s.action)
                failure.text = mask_text(s.stderr_tail or s.detail or "")
            elif s.outcome == "skipped":
                ET.SubElement(case, "skipped", message=mask_text(s.detail or "not run"))
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(sum(int(suite.get(key, "0")) for suite in root)))
    ET.indent(root)
    return ET.ElementTree(root)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(",", "%2C").replace("::", "%3A%3A")


def annotations(result: RunResult, phase: str) -> list[str]:
    """`::error title=release v2.5: orders@app2::exit 3: <last line of stderr>`, one per failed step."""
    lines = []
    for s in result.steps:
        if s.outcome != "failed":
            continue
        what = f"revert of release {result.release}" if _phase(s, phase) == "revert" else f"release {result.release}"
        body = s.why if s.stderr_tail is None else s.why + "\n\n" + s.stderr_tail
        lines.append(f"::error title={_escape_property(mask_text(f'{what}: {case_name(s)}'))}::"
                     f"{_escape_data(mask_text(body))}")
    if not lines and result.failures:  # failed with no step to blame (a crash, an unreachable host)
        lines.append(f"::error title={_escape_property(f'release {result.release}')}::"
                     f"{_escape_data(mask_text('; '.join(result.failures)))}")
    return lines


def _cell(text: object) -> str:
    return mask_text(str(text)).replace("|", "\\|").replace("\n", " ")


def _fenced(text: str) -> str:
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}"


def summary(result: RunResult, phase: str) -> str:
    """The Markdown step summary: outcome, every step in a table, each failed step's stderr tail."""
    out = [f"### {headline(event_of(result, phase), result.release, phase)}", ""]
    if result.message:
        out += [_cell(result.message), ""]
    if result.steps:
        out += ["| step | action | from | to | outcome | exit | seconds |", "| --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {_cell(case_name(s))} | {s.action} | {_cell(s.from_ or '-')} | {_cell(s.to or '-')} | "
                f"{'**failed**' if s.outcome == 'failed' else s.outcome} | "
                f"{'' if s.exit_code is None else s.exit_code} | {s.duration:.1f} |" for s in result.steps]
        out.append("")
    for s in result.steps:
        if s.outcome == "failed":
            out += [f"#### Failed: {_cell(case_name(s))} ({s.action}): {_cell(s.why)}", ""]
            if s.stderr_tail or s.detail:
                out += [_fenced(mask_text(s.stderr_tail or s.detail or "")), ""]
    for f in result.failures if not any(s.outcome == "failed" for s in result.steps) else ():
        out += [f"- {_cell(f)}"]
    return "\n".join(out).rstrip() + "\n\n"


def _stdout(line: str) -> None:
    write_console(sys.stdout, line + "\n")


def publish(result: RunResult, phase: str, *, junit_file: Path | str | None = None,
            annotate: Annotate | None = None) -> None:
    """Write the reports of a finished run. A report that cannot be written is logged and does
    not change the release's outcome (it already happened)."""
    log = get_logger(release=result.release)
    if junit_file:
        path = Path(junit_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            junit(result, phase).write(path, encoding="utf-8", xml_declaration=True)
        except OSError as exc:
            log.error("report.failed", report="junit", path=str(path), why=str(exc))
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return
    for line in annotations(result, phase):
        (annotate or _stdout)(line)
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        try:
            with open(target, "a", encoding="utf-8") as fh:
                fh.write(summary(result, phase))
        except OSError as exc:
            log.error("report.failed", report="step summary", path=target, why=str(exc))
