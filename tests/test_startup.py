"""What the commands that answer in an incident load: `status` and `--help` start without
Alembic, networkx or asyncssh. Which modules are imported, not how long it takes: timings are
the benchmarks' business (bench/), and a slow machine must not fail a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, cli, copy_demo, current

HEAVY = ("alembic", "networkx", "asyncssh")
# Runs the CLI in-process and writes the top-level packages it imported (executed, not merely
# registered for later by importlib's LazyLoader) to the file named by argv[1].
PROBE = """
import json, sys, types
from importlib.util import _LazyModule
from orchestrator.cli import main
rc = main(sys.argv[2:])
loaded = {n.split(".")[0] for n, m in list(sys.modules.items())
          if isinstance(m, types.ModuleType) and not isinstance(m, _LazyModule)}
open(sys.argv[1], "w").write(json.dumps({"rc": rc, "modules": sorted(loaded)}))
"""


def _imported(root: Path, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", PROBE, str(out), *args], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_demo(tmp_path_factory.mktemp("startup") / "repo")
    proc = cli("apply", "v2.3", "-y", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.mark.e2e
def test_status_reads_the_journal_without_alembic_networkx_or_asyncssh(applied: Path, tmp_path: Path) -> None:
    got = _imported(applied, tmp_path, "status")
    assert got["rc"] == 0
    assert "sqlalchemy" in got["modules"]  # the probe sees what status really loaded
    assert not set(HEAVY) & set(got["modules"]), got["modules"]


@pytest.mark.e2e
def test_help_loads_no_journal(tmp_path: Path) -> None:
    got = _imported(tmp_path, tmp_path, "--help")
    assert got["rc"] == 0
    assert not {*HEAVY, "sqlalchemy"} & set(got["modules"]), got["modules"]


def test_known_journal_revisions_are_the_scripts() -> None:
    from alembic.script import ScriptDirectory

    from orchestrator.journal_schema import HEAD, MIGRATIONS, REVISIONS

    script = ScriptDirectory(str(MIGRATIONS))
    assert [r.revision for r in reversed(list(script.walk_revisions()))] == list(REVISIONS)
    assert script.get_heads() == [HEAD]


@pytest.mark.e2e
def test_a_release_without_databases_or_webhooks_loads_neither_alembic_nor_httpx(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "services.d").mkdir(parents=True)
    for name in ("hosts.yaml", "catalog.yaml"):
        (root / "services.d" / name).write_text((REPO / "services.d" / name).read_text())
    got = _imported(root, tmp_path, "apply", "v1", "-y")  # a new journal, created here
    assert got["rc"] == 0
    assert {"sqlalchemy", "networkx"} <= set(got["modules"])  # it did journal and plan
    assert not {"alembic", "httpx"} & set(got["modules"]), got["modules"]
    assert current(root, "app1", "catalog") == "v1"
