"""Scoped releases (--target, --limit) and saved plans (plan --out, apply --plan) on the demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import orchestrator
from orchestrator.errors import InputError
from orchestrator.scope import Scope
from helpers import BACKEND, SERVICES, add_notes_revision, copy_demo, current, journal_rows, revision, run



@pytest.fixture(scope="module")
def v23(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_demo(tmp_path_factory.mktemp("scope") / "shop")
    orchestrator.apply(root, "v2.3")
    return root


def fresh(v23: Path, tmp_path: Path) -> Path:
    import shutil
    return Path(shutil.copytree(v23, tmp_path / "shop", symlinks=True))


def versions(root: Path) -> dict[tuple[str, str], str | None]:
    return {(s, h): current(root, h, s) for s, hosts in SERVICES.items() for h in hosts}


def test_target_changes_the_node_and_what_it_depends_on_and_revert_undoes_only_that(v23: Path, tmp_path: Path) -> None:
    root = fresh(v23, tmp_path)
    plan = orchestrator.plan(root, "v2.4", scope=Scope(targets=("orders",))).to_json()
    actions = {s["node"]: s["action"] for s in plan["steps"]}
    assert actions["web"] == actions["notifications"] == actions["payments"] == "excluded"
    assert actions["orders"] == actions["accounts"] == actions["inventory"] == actions["catalog"] == "deploy"
    orchestrator.apply(root, "v2.4", scope=Scope(targets=("orders",)))
    changed = {k for k, v in versions(root).items() if v == "v2.4"}
    assert changed == {(s, h) for s in ("orders", "accounts", "inventory", "catalog") for h in BACKEND}
    assert json.loads(journal_rows(root, "select manifests from releases where name='v2.4'")[0][0])["scope"] == \
        {"target": ["orders"], "limit": []}
    orchestrator.revert(root)
    assert set(versions(root).values()) == {"v2.3"}
    reverted = {(n, h) for n, h in journal_rows(root, "select node, host from steps where phase='revert'")}
    assert reverted == changed


def test_limit_changes_only_those_hosts(v23: Path, tmp_path: Path) -> None:
    root = fresh(v23, tmp_path)
    add_notes_revision(root)
    plan = orchestrator.plan(root, "v2.4", scope=Scope(limit=("app1",))).to_json()
    assert next(s for s in plan["steps"] if s["node"] == "orders-db")["action"] == "excluded"
    assert {"node": "orders", "action": "excluded", "hosts": ["app2"]}.items() <= next(
        s for s in plan["steps"] if s["node"] == "orders" and s["action"] == "excluded").items()
    orchestrator.apply(root, "v2.4", scope=Scope(limit=("app1",)))
    assert {k for k, v in versions(root).items() if v == "v2.4"} == {(s, "app1") for s in SERVICES if "app1" in SERVICES[s]}
    assert revision(root / ".release/orders.db") == "o3_status"  # a database is on no host: left out
    orchestrator.revert(root)
    assert set(versions(root).values()) == {"v2.3"}


def test_unknown_target_or_limit_is_invalid_input(v23: Path) -> None:
    with pytest.raises(InputError, match="--target names unknown node"):
        orchestrator.plan(v23, "v2.4", scope=Scope(targets=("nope",)))
    with pytest.raises(InputError, match="--limit names unknown host"):
        orchestrator.plan(v23, "v2.4", scope=Scope(limit=("nope",)))


def test_a_saved_plan_applies_exactly(v23: Path, tmp_path: Path) -> None:
    root = fresh(v23, tmp_path)
    out = tmp_path / "plan.json"
    run("plan", "v2.4", "--target", "payments", "--out", str(out), cwd=root, check=0)
    run("apply", "--plan", str(out), "-y", cwd=root, check=0)
    assert {k for k, v in versions(root).items() if v == "v2.4"} == {("payments", "app2"), ("accounts", "app1"),
                                                                      ("accounts", "app2")}
    assert journal_rows(root, "select name, state from releases order by id") == [("v2.3", "applied"),
                                                                                  ("v2.4", "applied")]


def _edit_manifest(root: Path) -> None:
    p = root / "services.d/web.yaml"
    p.write_text(p.read_text() + "# reviewed? no\n")


def _edit_script(root: Path) -> None:
    p = root / "migrations/orders/versions/o3_status.py"
    p.write_text(p.read_text() + "\n# changed\n")


def _another_release(root: Path) -> None:
    orchestrator.apply(root, "v2.3-again", force=("web",))


def _host_changed(root: Path) -> None:
    link = root / ".release/hosts/edge1/apps/web/current"
    (link.parent / "releases/v9").mkdir()
    (link.parent / "releases/v9/VERSION").write_text("v9\n")
    link.unlink()
    link.symlink_to("releases/v9")


def _database_changed(root: Path) -> None:
    import sqlalchemy as sa
    eng = sa.create_engine(f"sqlite:///{root}/.release/orders.db")
    with eng.begin() as c:
        c.execute(sa.text("update alembic_version set version_num='o2_items'"))
    eng.dispose()


@pytest.mark.parametrize("change,why", [
    (_edit_manifest, "the manifests changed"), (_edit_script, "a migration script changed"),
    (_another_release, "the journal has a newer or changed release record"),
    (_host_changed, "a host reports another running version"),
    (_database_changed, "a database is at another revision"),
], ids=["manifest", "script", "journal", "host", "database"])
def test_a_stale_saved_plan_is_refused_and_changes_nothing(v23: Path, tmp_path: Path, change, why: str) -> None:
    root = fresh(v23, tmp_path)
    out = tmp_path / "plan.json"
    run("plan", "v2.4", "--out", str(out), cwd=root, check=0)
    change(root)
    before = versions(root), journal_rows(root, "select id, name, state from releases")
    proc = run("apply", "--plan", str(out), "-y", cwd=root, check=2)
    assert f"the plan is stale: {why}" in proc.stderr
    assert (versions(root), journal_rows(root, "select id, name, state from releases")) == before
