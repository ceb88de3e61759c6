"""CI reports: --junit, and under GitHub Actions the ::error annotations and the step summary."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import copy_demo, fail_orders_on, run

from orchestrator.reports import annotations, junit
from orchestrator.runs import RunResult
from orchestrator.steps import StepReport

TOKEN = "tok-planted-4711"


def _leaky_failure(root: Path) -> None:
    fail_orders_on(root, "app2", "v2.5")
    path = root / "services.d" / "orders.yaml"
    path.write_text(path.read_text().replace("  set -e\n", '  set -e\n  echo "token is $SHOP_TOKEN" >&2\n', 1))


def _cases(path: Path) -> list[ET.Element]:
    return list(ET.parse(path).getroot().iter("testcase"))


def test_junit_has_one_case_per_step_and_the_failure(tmp_path: Path) -> None:
    demo = copy_demo(tmp_path / "demo")
    _leaky_failure(demo)
    report = tmp_path / "out" / "junit.xml"

    proc = run("apply", "v2.5", "--json", "--junit", str(report), cwd=demo, env={"SHOP_TOKEN": TOKEN}, check=1)

    steps = json.loads(proc.stdout)["steps"]
    cases = _cases(report)
    assert len(cases) == len(steps) > 0
    names = {(c.get("classname"), c.get("name")) for c in cases}
    assert ("orders", "orders@app2") in names and ("orders-db", "orders-db (o3_status)") in names
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["orders@app2"]
    failure = failed[0].find("failure")
    assert failure.get("message") == "exit 3: orders broke on app2"
    assert "orders broke on app2" in failure.text and "token is ***" in failure.text
    skipped = [c.get("name") for c in cases if c.find("skipped") is not None]
    assert sorted(skipped) == ["notifications", "web"]  # they wait on orders
    assert TOKEN not in report.read_text()
    root = ET.parse(report).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == (str(len(steps)), "1", "2")


@pytest.mark.slow
def test_github_actions_annotations_and_step_summary(tmp_path: Path) -> None:
    demo = copy_demo(tmp_path / "demo")
    _leaky_failure(demo)
    summary = tmp_path / "summary.md"
    summary.write_text("## earlier step\n\n")
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary), "SHOP_TOKEN": TOKEN}

    proc = run("apply", "v2.5", "--junit", str(tmp_path / "j.xml"), cwd=demo, env=env, check=1)

    errors = [line for line in proc.stdout.splitlines() if line.startswith("::error ")]
    assert len(errors) == 1
    assert errors[0].startswith("::error title=release v2.5: orders@app2::exit 3: orders broke on app2")
    assert "%0A" in errors[0]  # the stderr tail follows, on the same line
    text = summary.read_text()
    assert text.startswith("## earlier step\n")  # appended
    assert "release v2.5 failed" in text
    assert "| orders@app2 | deploy |" in text and "**failed**" in text
    assert "Failed: orders@app2" in text and "orders broke on app2" in text
    assert TOKEN not in text + proc.stdout + proc.stderr

    run("revert", "-y", cwd=demo, env=env, check=0)
    assert "release v2.5 reverted" in summary.read_text()


def test_annotations_escape_what_github_reads_as_syntax() -> None:
    step = StepReport("orders", "service", "app2", "deploy", "failed", 3, 0.5,
                      stderr_tail="100% broken\r\nsee, here")
    (line,) = annotations(RunResult("v2.5", "failed", [step]), "apply")
    assert line == "::error title=release v2.5: orders@app2::exit 3: see, here%0A%0A100%25 broken%0D%0Asee, here"
    reverted = StepReport("orders", "service", "app2", "revert", "failed", 1, stderr_tail="no")
    assert annotations(RunResult("v2.5", "applied", [reverted]), "revert")[0].startswith(
        "::error title=revert of release v2.5: orders@app2::exit 1: no")


def test_an_auto_revert_is_a_testsuite_of_its_own() -> None:
    result = RunResult("v2.5", "failed", [
        StepReport("orders", "service", "app2", "deploy", "failed", 3, stderr_tail="boom"),
        StepReport("orders-db", "database", None, "migrate", "ok", 0, revision="o3_status"),
        StepReport("orders", "service", "app2", "revert", "ok", 0),
    ])
    root = junit(result, "apply").getroot()
    suites = {s.get("name"): [c.get("name") for c in s] for s in root}
    assert suites == {"release v2.5: apply": ["orders@app2", "orders-db (o3_status)"],
                      "release v2.5: revert": ["orders@app2"]}
    assert root.get("tests") == "3" and root.get("failures") == "1"
