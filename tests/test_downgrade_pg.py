"""Rolling back by applying older manifests on PostgreSQL: the schema goes down only after the
services that need it, and the revert of that release takes it back up first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_postgres import System, assert_services_at, shop  # noqa: F401 - the fixture

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


def run_order(root: Path, release: str) -> list[tuple[str, str]]:
    log = sorted((root / ".release/logs").glob(f"{release}-*.jsonl"))[-1]
    return [(e["node"], e["event"]) for e in map(json.loads, log.read_text().splitlines()) if e.get("node")]


def pin(shop: System, version: str, services: tuple[str, ...]) -> None:
    for svc in services:
        f = shop.root / "services.d" / f"{svc}.yaml"
        lines = [ln for ln in f.read_text().splitlines() if not ln.startswith("version:")]
        f.write_text("\n".join(lines + [f"version: {version}"]) + "\n")


def test_applying_older_manifests_downgrades_after_the_dependents(shop: System) -> None:
    shop.set_target("orders-db", "o1_orders")
    shop.run("apply", "r1", check=0)
    assert shop.schema("orders-db") == ("o1_orders", {"orders": {"id", "user_id", "total_cents", "created_at"}})
    shop.set_target("orders-db", None)
    shop.run("apply", "r2", check=0)
    version, tables = shop.schema("orders-db")
    assert version == "o3_status" and "order_items" in tables

    # git checkout <r1> -- services.d: the database's target and the services' versions go back.
    shop.set_target("orders-db", "o1_orders")
    pin(shop, "r1", ("accounts", "catalog", "inventory", "orders", "payments", "notifications", "web"))
    plan = shop.json("plan", "r1-again")
    step = next(s for s in plan["steps"] if s["node"] == "orders-db")
    assert (step["action"], step["direction"], step["revisions"]) == ("migrate", "down", ["o3_status", "o2_items"])
    assert "downgrade o3_status -> o1_orders" in shop.run("plan", "r1-again", check=0).stdout
    shop.run("apply", "r1-again", check=0)
    assert shop.schema("orders-db") == ("o1_orders", {"orders": {"id", "user_id", "total_cents", "created_at"}})
    assert_services_at(shop.root, "r1")
    order = run_order(shop.root, "r1-again")
    first_down = order.index(("orders-db", "migrate.start"))
    for svc in ("orders", "notifications", "web"):
        assert order.index((svc, "deploy.done")) < first_down, svc

    shop.run("revert", check=0)
    version, tables = shop.schema("orders-db")
    assert version == "o3_status" and "order_items" in tables and "status" in tables["orders"]
    assert_services_at(shop.root, "r2")
    order = run_order(shop.root, "r1-again")
    last_up = max(i for i, e in enumerate(order) if e == ("orders-db", "upgrade.done"))
    for svc in ("orders", "notifications", "web"):
        assert last_up < order.index((svc, "revert.start")), svc
