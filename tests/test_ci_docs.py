"""The CI pipelines of docs/ci.md: the files in docs/examples are the ones the page shows, and every
`release` command in them runs against the demo and exits as the pipeline expects."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import copy_demo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # whole pipelines of release processes

DOCS = Path(__file__).resolve().parent.parent / "docs"
WORKFLOW = DOCS / "examples" / "release.yml"
JENKINSFILE = DOCS / "examples" / "Jenkinsfile"


def test_the_examples_are_the_pages_code_blocks() -> None:
    page = (DOCS / "ci.md").read_text()
    assert re.findall(r"```yaml\n(.*?)```", page, re.S) == [WORKFLOW.read_text()]
    assert re.findall(r"```groovy\n(.*?)```", page, re.S) == [JENKINSFILE.read_text()]


def release_lines(script: str) -> list[str]:
    """The lines of a shell script that run `release` (continuation lines joined)."""
    lines = script.replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip().startswith("release ")]


def workflow_commands() -> list[str]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["env"]["RELEASE_JOURNAL"] == "${{ secrets.RELEASE_JOURNAL }}"
    jobs = workflow["jobs"]
    assert all("RELEASE_NAME" in job["env"] for job in jobs.values())
    revert = next(s for s in jobs["apply"]["steps"] if s.get("name") == "Revert")
    assert "failure()" in revert["if"]
    return [line for job in jobs.values() for step in job["steps"] for line in release_lines(step.get("run", ""))]


# sh 'script', sh "script", sh '''script''' and sh(returnStatus: true, script: 'script')
SH = re.compile(r"""\bsh\s*\(?\s*(?:[a-zA-Z]+\s*:\s*[^,'"]+,\s*)*(?:script\s*:\s*)?"""
                r"""('''(?P<triple>.*?)'''|'(?P<single>[^'\n]*)'|"(?P<double>[^"\n]*)")""", re.S)


def jenkinsfile_commands() -> list[str]:
    text = JENKINSFILE.read_text()
    assert "credentials('release-journal')" in text
    scripts = [m["triple"] or m["single"] or m["double"] or "" for m in SH.finditer(text)]
    return [line for script in scripts for line in release_lines(script)]


@pytest.fixture(scope="module")
def release_on_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A `release` command as the pipelines install it: this checkout's, first on PATH."""
    bin_dir = tmp_path_factory.mktemp("bin")
    shim = bin_dir / "release"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m orchestrator "$@"\n')
    shim.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def has_junit() -> bool:
    out = subprocess.run([sys.executable, "-m", "orchestrator", "apply", "--help"], capture_output=True,
                         text=True).stdout
    return "--junit" in out


@pytest.mark.parametrize("commands", [workflow_commands, jenkinsfile_commands], ids=["github", "jenkins"])
def test_every_release_command_of_the_pipeline_runs(commands, tmp_path: Path, release_on_path: str) -> None:  # noqa: ANN001
    lines = commands()
    assert any("--detailed-exitcode" in line for line in lines)
    assert any(line.startswith("release apply ") for line in lines)
    assert any(line.startswith("release revert ") for line in lines)
    demo = copy_demo(tmp_path / "repo")
    # What the pipeline would have set, made harmless: no shared journal (this checkout's own),
    # a release name the demo knows, GitHub's files in a temporary directory.
    env = dict(os.environ, PATH=release_on_path, RELEASE_NAME="v2.3", NO_COLOR="1",
               GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"), GITHUB_OUTPUT=str(tmp_path / "output"))
    for name in ("RELEASE_JOURNAL", "RELEASE_FAULT", "CI"):
        env.pop(name, None)
    # `--junit` comes with the reports of `apply` and `revert`, built on another branch: until
    # it is merged here, the lines using it are skipped; once `apply --help` lists it, they run.
    junit = has_junit()
    ran = []
    for line in lines:
        if "--junit" in line and not junit:
            continue
        proc = subprocess.run(["bash", "-c", line], cwd=demo, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=300)
        # Run in file order on a fresh demo: the plan comes first and finds everything to do.
        want = 2 if "--detailed-exitcode" in line else 0
        assert proc.returncode == want, f"{line}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        ran.append(line)
    assert any("--detailed-exitcode" in line for line in ran)
    assert (demo / "plan.txt").read_text().startswith("release v2.3")
