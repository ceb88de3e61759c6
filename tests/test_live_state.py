"""Trusting the hosts, not only the journal: probes, verified deploys, canary and soak, order when a
schema goes down, and a refused apply that blocks nothing. Local hosts, real commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import orchestrator
from orchestrator.errors import StepFailed
from helpers import add_notes_revision, copy_demo, current, journal_rows, revision, tables, write

# A Capistrano-style service: releases/<v>/VERSION and a `current` link; the probe reads the link.
DEPLOY = """deploy: |
  set -e
  d="apps/$RELEASE_SERVICE"
  echo "$(date +%s.%N) start $RELEASE_ACTION $RELEASE_SERVICE ${RELEASE_VERSION:-none}" >> events.log
  if [ -z "$RELEASE_VERSION" ]; then rm -f "$d/current"; else
    mkdir -p "$d/releases/$RELEASE_VERSION"
    printf "%s\\n" "$RELEASE_VERSION" > "$d/releases/$RELEASE_VERSION/VERSION"
    ln -sfn "releases/$RELEASE_VERSION" "$d/current"
  fi
  echo "$(date +%s.%N) end $RELEASE_ACTION $RELEASE_SERVICE ${RELEASE_VERSION:-none}" >> events.log
current: l=$(readlink "apps/$RELEASE_SERVICE/current") && echo "${l##*/}"
"""


def shop(root: Path, hosts_dir: Path | None = None, extra: str = "", hosts: tuple[str, ...] = ("h1", "h2")) -> Path:
    """api on every host, web after it on h1. `hosts_dir`: the hosts live outside the project
    (another checkout of the same release repository sees the same hosts)."""
    inv = "hosts:\n" + "".join(
        f"  {h}: {{transport: local" + (f", root: {hosts_dir / h}" if hosts_dir else "") + "}\n" for h in hosts)
    write(root, {
        "services.d/hosts.yaml": inv,
        "services.d/api.yaml": f"hosts: [{', '.join(hosts)}]\n{DEPLOY}{extra}",
        "services.d/web.yaml": f"hosts: [{hosts[0]}]\ndepends_on: [api]\n{DEPLOY}",
    })
    return root


def link(hosts_dir: Path, host: str, service: str) -> str | None:
    p = hosts_dir / host / "apps" / service / "current"
    return p.resolve().name if p.is_symlink() else None


def host_events(hosts_dir: Path, host: str) -> list[tuple[float, str, str, str, str]]:
    out = []
    for line in (hosts_dir / host / "events.log").read_text().splitlines():
        ts, what, action, service, version = line.split()
        out.append((float(ts), what, action, service, version))
    return out


def test_a_fresh_checkout_sees_what_runs_and_its_revert_restores_it(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    first = shop(tmp_path / "ci-runner-1", hosts)
    orchestrator.apply(first, "v1")
    second = shop(tmp_path / "colleague", hosts)  # same hosts, its own empty journal
    plan = orchestrator.plan(second, "v2").to_json()
    api = next(s for s in plan["steps"] if s["node"] == "api")
    assert api["current"] == {"h1": "v1", "h2": "v1"} and api["from"] == "v1"
    orchestrator.apply(second, "v2")
    assert {link(hosts, h, "api") for h in ("h1", "h2")} == {"v2"}
    # The journal recorded the reported version as the one before the release...
    assert journal_rows(second, "select distinct before from steps where node='api'") == [("v1",)]
    orchestrator.revert(second)
    # ... so the revert puts v1 back everywhere, files and all, instead of removing the service.
    assert {link(hosts, h, s) for h, s in [("h1", "api"), ("h2", "api"), ("h1", "web")]} == {"v1"}
    assert (hosts / "h2/apps/api/releases/v1/VERSION").read_text() == "v1\n"


def test_drift_is_reported_and_revert_restores_what_the_host_ran(tmp_path: Path) -> None:
    root = shop(tmp_path)
    hosts = root / ".release/hosts"
    orchestrator.apply(root, "v1")
    # Someone changes h2 by hand between releases.
    (hosts / "h2/apps/api/releases/v0.9").mkdir(parents=True)
    (hosts / "h2/apps/api/current").unlink()
    (hosts / "h2/apps/api/current").symlink_to("releases/v0.9")
    plan = orchestrator.plan(root, "v2").to_json()
    api = next(s for s in plan["steps"] if s["node"] == "api")
    assert {"revision": None, "kind": "drift", "message": "drift: journal says v1, h2 reports v0.9"} in api["warnings"]
    assert api["current"] == {"h1": "v1", "h2": "v0.9"} and api["from"] is None
    st = orchestrator.status(root, live=True)
    assert {"node": "api", "host": "h2", "journal": "v1", "live": "v0.9"} in st["drift"]
    assert st["live"]["api"] == {"h1": "v1", "h2": "v0.9"}
    orchestrator.apply(root, "v2")
    orchestrator.revert(root)
    assert (link(hosts, "h1", "api"), link(hosts, "h2", "api")) == ("v1", "v0.9")


def test_a_deploy_that_changes_nothing_fails_verification(tmp_path: Path) -> None:
    root = shop(tmp_path)
    orchestrator.apply(root, "v1")
    api = (root / "services.d/api.yaml").read_text().replace("deploy: |\n  set -e\n", "deploy: |\n  exit 0\n")
    write(root, {"services.d/api.yaml": api})
    with pytest.raises(StepFailed) as err:
        orchestrator.apply(root, "v3")
    assert "api@h1: deploy succeeded but the host still reports v1, expected v3" in str(err.value)
    assert journal_rows(root, "select state from releases where name='v3'") == [("failed",)]
    # web depends on api: not started, still v1; the status does not claim v3 anywhere.
    assert link(root / ".release/hosts", "h1", "web") == "v1"
    assert "v3" not in json.dumps(orchestrator.status(root)["services"])


@pytest.mark.slow
def test_canary_then_soak_then_the_rest(tmp_path: Path) -> None:
    root = shop(tmp_path, extra="canary: 1\nsoak: 2\nhealth: test -L apps/api/current\nhealth_interval: 0.5\n")
    hosts = root / ".release/hosts"
    orchestrator.apply(root, "v1")
    h1_end = max(t for t, what, action, svc, _ in host_events(hosts, "h1") if (what, svc) == ("end", "api"))
    h2_start = min(t for t, what, action, svc, _ in host_events(hosts, "h2") if (what, svc) == ("start", "api"))
    assert h2_start - h1_end >= 2.0


def test_a_health_check_failing_during_the_soak_stops_the_rollout(tmp_path: Path) -> None:
    # Healthy right after the deploy, then failing: the soak's checks catch it.
    health = "health: 'n=$(cat hc 2>/dev/null || echo 0); echo $((n+1)) > hc; [ $n -lt 1 ]'\n"
    root = shop(tmp_path, extra=f"canary: 1\nsoak: 3\nhealth_interval: 0.3\n{health}")
    with pytest.raises(StepFailed, match="while soaking"):
        orchestrator.apply(root, "v1")
    hosts = root / ".release/hosts"
    assert link(hosts, "h1", "api") == "v1"
    assert not (hosts / "h2/apps").exists()  # untouched
    orchestrator.revert(root)
    assert link(hosts, "h1", "api") is None


def test_a_refused_apply_does_not_block_the_next_release(tmp_path: Path) -> None:
    root = shop(tmp_path)
    (tmp_path / "not-a-dir").write_text("")
    good = (root / "services.d/hosts.yaml").read_text()
    write(root, {"services.d/hosts.yaml": good.replace("h2: {transport: local}",
                                                        f"h2: {{transport: local, root: {tmp_path}/not-a-dir/h2}}")})
    with pytest.raises(orchestrator.HostUnreachable):
        orchestrator.apply(root, "v1")
    assert journal_rows(root, "select name, state from releases") == [("v1", "failed")]
    write(root, {"services.d/hosts.yaml": good})
    result = orchestrator.apply(root, "v2")  # another name, no --force-release
    assert result.state == "applied" and current(root, "h2", "api") == "v2"


def test_a_schema_going_down_waits_for_its_dependents_and_its_revert_goes_up_first(tmp_path: Path) -> None:
    root = copy_demo(tmp_path / "shop")
    orchestrator.apply(root, "v2.3")
    add_notes_revision(root)
    orchestrator.apply(root, "v2.4")  # orders-db up to o4_notes
    db = root / ".release/orders.db"
    assert revision(db) == "o4_notes" and "order_notes" in tables(db)
    # Roll back by applying the older manifests as a new release: orders-db goes down.
    spec = root / "services.d/orders-db.yaml"
    spec.write_text(spec.read_text() + "target: o3_status\n")
    for svc in ("orders", "web"):
        f = root / f"services.d/{svc}.yaml"
        f.write_text(f.read_text().replace(f"name: {svc}\n", f"name: {svc}\nversion: v2.3\n"))
    plan = orchestrator.plan(root, "v2.4-rollback").to_json()
    step = next(s for s in plan["steps"] if s["node"] == "orders-db")
    assert step["direction"] == "down" and step["revisions"] == ["o4_notes"]
    assert plan["waves"].index(next(w for w in plan["waves"] if "orders-db" in w)) > \
        plan["waves"].index(next(w for w in plan["waves"] if "orders" in w))
    orchestrator.apply(root, "v2.4-rollback")
    assert revision(db) == "o3_status" and "order_notes" not in tables(db)
    order = run_log_order(root, "v2.4-rollback")
    assert order.index(("orders-db", "migrate.start")) > order.index(("orders", "deploy.done"))
    assert order.index(("orders-db", "migrate.start")) > order.index(("web", "deploy.done"))
    orchestrator.revert(root)
    assert revision(db) == "o4_notes" and current(root, "app1", "orders") == "v2.4"
    order = run_log_order(root, "v2.4-rollback")
    # The revert takes orders-db back up: its steps say so.
    assert order.index(("orders-db", "upgrade.done")) < order.index(("orders", "revert.start"))


def run_log_order(root: Path, release: str) -> list[tuple[str, str]]:
    """(node, event) of the newest run log of `release`, in the order they were written."""
    log = sorted((root / ".release/logs").glob(f"{release}-*.jsonl"))[-1]
    return [(e["node"], e["event"]) for e in map(json.loads, log.read_text().splitlines()) if e.get("node")]


def test_plan_creates_nothing_on_hosts_that_were_never_set_up(tmp_path: Path) -> None:
    root = shop(tmp_path)
    plan = orchestrator.plan(root, "v1").to_json()
    assert next(s for s in plan["steps"] if s["node"] == "api")["current"] == {"h1": None, "h2": None}
    assert not (root / ".release").exists()
    shutil.rmtree(root / "services.d")


def test_a_host_that_cannot_be_probed_fails_the_plan_naming_it(tmp_path: Path) -> None:
    root = shop(tmp_path, extra="timeout: 1\n")
    orchestrator.apply(root, "v1")
    api = (root / "services.d/api.yaml").read_text()
    write(root, {"services.d/api.yaml": api.replace("current: ", "current: test $RELEASE_HOST != h2 || sleep 5; ")})
    with pytest.raises(orchestrator.ReleaseError) as err:
        orchestrator.plan(root, "v2")
    assert err.value.exit_code == 1
    assert "api@h2: cannot read the running version: timed out" in str(err.value)
    assert "api@h1" not in str(err.value)
