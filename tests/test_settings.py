"""services.d/release.yaml: the project's settings; a shared journal by default for every checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

import orchestrator
from orchestrator.errors import InputError
from helpers import run, write

SERVICE = "hosts: [h1]\ndeploy: 'echo $RELEASE_VERSION > VERSION'\n"


def project(root: Path, settings: str | None = None) -> Path:
    write(root, {"services.d/hosts.yaml": "hosts:\n  h1: {transport: local}\n", "services.d/api.yaml": SERVICE})
    if settings is not None:
        write(root, {"services.d/release.yaml": settings})
    return root


def test_the_journal_named_in_release_yaml_is_every_checkouts_default(tmp_path: Path) -> None:
    shared = tmp_path / "team" / "journal.db"
    shared.parent.mkdir()
    a = project(tmp_path / "a", f"journal: sqlite:///{shared}\n")
    b = project(tmp_path / "b", f"journal: sqlite:///{shared}\n")
    orchestrator.apply(a, "v1")
    assert shared.exists() and not (a / ".release/journal.db").exists()
    # Another checkout sees the release without any flag.
    assert orchestrator.status(b)["release"] == "v1"
    assert [r["release"] for r in orchestrator.history(b)] == ["v1"]


def test_release_yaml_is_not_a_service_and_its_mistakes_name_the_file(tmp_path: Path) -> None:
    root = project(tmp_path, "journal: sqlite:///x.db\nnotfy: []\n")
    with pytest.raises(InputError) as err:
        orchestrator.validate(root)
    assert err.value.exit_code == 2
    assert err.value.problems == ["services.d/release.yaml: notfy: unknown field"]
    write(root, {"services.d/release.yaml": "hooks: {pre_apply: ./check.sh}\n"})
    assert sorted(orchestrator.validate(root).nodes) == ["api"]


def test_ci_with_the_per_checkout_journal_is_warned(tmp_path: Path) -> None:
    root = project(tmp_path)
    proc = run("apply", "v1", "-y", cwd=root, env={"CI": "true"}, check=0)
    assert "journal is this checkout's own file" in proc.stderr
    proc = run("apply", "v2", "-y", cwd=root, env={"CI": "true", "RELEASE_JOURNAL": f"sqlite:///{tmp_path}/j.db"},
               check=0)
    assert "journal is this checkout's own file" not in proc.stderr
