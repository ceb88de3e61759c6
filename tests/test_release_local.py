"""End to end on the embedded demo with `local` hosts and SQLite: plan, apply, revert.

`release` runs in this process (helpers.run); the tests marked `e2e` start it as a process of its
own for what only that shows: the exit code of the real entry point, a terminal."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import psutil
import pytest

from helpers import (BACKEND, SERVICES, add_notes_revision, cli, copy_demo, current, events, fail_orders_on,
                     journal_rows, revision, run, run_json, tables, wait_for, write)

HEADS = {"accounts": "a3_sessions", "orders": "o3_status"}


def demo_graph(root: Path) -> nx.DiGraph:
    from orchestrator.graph import build_graph
    from orchestrator.manifests import load_project

    return build_graph(load_project(root))


def assert_all_at(root: Path, version: str | None) -> None:
    for svc, hosts in SERVICES.items():
        for h in hosts:
            assert current(root, h, svc) == version, (svc, h)


def test_plan_creates_nothing_and_matches_spec(demo: Path) -> None:
    p = run_json("plan", "v2.3", cwd=demo)
    assert not (demo / ".release").exists()
    assert set(p) == {"release", "previous", "waves", "steps"}
    assert p["release"] == "v2.3" and p["previous"] is None
    assert p["waves"][0] == ["accounts-db", "catalog"]
    assert len(p["waves"]) >= 3
    by = {s["node"]: s for s in p["steps"]}
    assert set(by) == set(SERVICES) | {"accounts-db", "orders-db"}
    orders = by["orders"]
    assert set(orders) == {"node", "kind", "action", "from", "to", "hosts", "current"}
    assert orders == {"node": "orders", "kind": "service", "action": "deploy", "from": None, "to": "v2.3",
                      "hosts": BACKEND, "current": {"app1": None, "app2": None}}
    db = by["orders-db"]
    assert set(db) == {"node", "kind", "action", "from", "to", "revisions", "reversible", "direction"}
    assert db["action"] == "migrate" and db["from"] is None and db["to"] == "o3_status" and db["direction"] == "up"
    assert db["revisions"] == ["o1_orders", "o2_items", "o3_status"] and db["reversible"] is True
    # The steps come in wave order.
    order = [s["node"] for s in p["steps"]]
    assert order == [n for wave in p["waves"] for n in wave]


@pytest.mark.e2e
def test_detailed_exitcode(demo: Path) -> None:
    # The process's exit status itself once (the entry point passes the code on), then in-process.
    assert cli("plan", "v2.3", "--detailed-exitcode", cwd=demo).returncode == 2
    run("apply", "v2.3", cwd=demo, check=0)
    assert run("plan", "v2.3", "--detailed-exitcode", cwd=demo).returncode == 0
    write(demo, {"services.d/web.yaml": "hosts: [nowhere]\ndeploy: 'true'\n"})
    assert run("plan", "v2.3", "--detailed-exitcode", cwd=demo).returncode == 1


def test_apply_status_and_order(demo: Path) -> None:
    proc = run("apply", "v2.3", cwd=demo, check=0)
    assert "applied" in proc.stdout
    assert_all_at(demo, "v2.3")
    assert revision(demo / ".release" / "accounts.db") == HEADS["accounts"]
    assert revision(demo / ".release" / "orders.db") == HEADS["orders"]
    assert {"orders", "order_items"} <= tables(demo / ".release" / "orders.db")

    st = run_json("status", cwd=demo)
    assert st["release"] == "v2.3" and st["state"] == "applied"
    assert st["services"]["orders"] == {"app1": "v2.3", "app2": "v2.3"}
    assert st["databases"] == {"accounts-db": "a3_sessions", "orders-db": "o3_status"}

    # Every dependent started after its dependency ended, on every host (journal times).
    rows = journal_rows(demo, "select node, started_at, ended_at from steps where phase='apply'")
    start = {n: min(r[1] for r in rows if r[0] == n) for n, *_ in rows}
    end = {n: max(r[2] for r in rows if r[0] == n) for n, *_ in rows}
    g = demo_graph(demo)
    for a, b in g.edges:
        assert start[b] >= end[a], f"{b} started before {a} ended"
    # The commands' own clocks agree: on each host, a dependent's deploy starts after its
    # dependency's deploy ended on every host.
    ev = {h: events(demo, h) for h in ("app1", "app2", "edge1")}
    ends = {}
    for h, evs in ev.items():
        for ts, what, _action, svc, _v in evs:
            if what == "end":
                ends[svc] = max(ends.get(svc, 0), ts)
    for h, evs in ev.items():
        for ts, what, _action, svc, _v in evs:
            if what == "start":
                for dep in g.predecessors(svc):
                    if dep in ends:
                        assert ts >= ends[dep], f"{svc}@{h} started before {dep} ended"
    # Databases first: each database's last migration ended before any service that depends on
    # it, directly or not, started on any host.
    assert set(start) == set(SERVICES) | {"accounts-db", "orders-db"}
    assert {"accounts", "payments", "orders", "notifications", "web"} <= nx.descendants(g, "accounts-db")
    assert {"orders", "notifications", "web"} <= nx.descendants(g, "orders-db")
    for db in ("accounts-db", "orders-db"):
        for svc in nx.descendants(g, db) - {"orders-db"}:
            assert start[svc] >= end[db], f"{svc} started before {db} ended"
    # One JSONL log per run, every event carrying release, node and host.
    logs = list((demo / ".release" / "logs").glob("v2.3-*.jsonl"))
    assert len(logs) == 1
    lines = [json.loads(line) for line in logs[0].read_text().splitlines()]
    assert lines and all({"ts", "level", "event", "release", "node", "host"} <= set(e) for e in lines)
    assert any(e["event"] == "deploy.done" and e["node"] == "orders" and e["host"] == "app2" for e in lines)


def test_verbose_shows_what_commands_printed(demo: Path) -> None:
    quiet = run("apply", "v2.3", cwd=demo, check=0)
    assert "deploy.output" not in quiet.stderr and "lock.acquired" not in quiet.stderr
    write(demo, {"services.d/web.yaml": (demo / "services.d/web.yaml").read_text().replace(
        "  set -e\n", "  set -e\n  echo \"hello from $RELEASE_HOST\"\n", 1)})
    loud = run("-v", "apply", "v2.4", cwd=demo, check=0)
    lines = [line for line in loud.stderr.splitlines() if "deploy.output" in line and "web@edge1" in line]
    assert len(lines) == 1 and "hello from edge1" in lines[0] and "exit_code=0" in lines[0]
    assert "lock.acquired" in loud.stderr and "health.ok" in loud.stderr


def test_unchanged_not_redeployed(demo: Path) -> None:
    run("apply", "v2.3", cwd=demo, check=0)
    before = events(demo, "app1")
    proc = run("apply", "v2.3", cwd=demo, check=0)
    assert "nothing to change" in proc.stdout
    assert events(demo, "app1") == before
    # A pinned service stays unchanged in the next release; --force redeploys it.
    write(demo, {"services.d/payments.yaml":
                 (demo / "services.d/payments.yaml").read_text() + "version: v2.3\n"})
    plan = run_json("plan", "v2.4", cwd=demo)
    by = {s["node"]: s for s in plan["steps"]}
    assert by["payments"]["action"] == "unchanged" and by["orders"]["action"] == "deploy"
    assert by["orders"]["from"] == "v2.3" and plan["previous"] == "v2.3"
    forced = run_json("plan", "v2.4", "--force", "payments", cwd=demo)
    assert {s["node"]: s for s in forced["steps"]}["payments"]["action"] == "deploy"



def v24_that_breaks_orders_on_app2(demo: Path) -> None:
    """v2.3 applied; v2.4 adds orders-db's o4_notes and its orders deploy fails on app2."""
    run("apply", "v2.3", cwd=demo, check=0)
    add_notes_revision(demo)
    fail_orders_on(demo, "app2", "v2.4")


def test_failed_release_reverts_exactly(demo: Path) -> None:
    v24_that_breaks_orders_on_app2(demo)
    proc = run("apply", "v2.4", "--json", cwd=demo)
    assert proc.returncode == 1
    assert "orders on app2" in proc.stderr and "orders broke on app2" in proc.stderr
    assert "release revert" in proc.stderr
    result = json.loads(proc.stdout)
    assert result["state"] == "failed"
    failed = [s for s in result["steps"] if s["outcome"] == "failed"]
    assert [(s["node"], s["host"], s["exit_code"]) for s in failed] == [("orders", "app2", 3)]
    # Dependents never started; the schema moved on.
    assert current(demo, "app1", "notifications") == "v2.3"
    assert current(demo, "edge1", "web") == "v2.3"
    assert revision(demo / ".release" / "orders.db") == "o4_notes"
    # The journal says exactly which hosts changed.
    changed = journal_rows(demo, "select node, host, status from steps where phase='apply' and kind='service' "
                           "and release_id=(select max(id) from releases)")
    assert ("orders", "app2", "failed") in changed and ("web", "edge1", "ok") not in changed
    assert run_json("status", cwd=demo)["state"] == "failed"

    proc = run("revert", cwd=demo, check=0)
    assert_all_at(demo, "v2.3")
    assert revision(demo / ".release" / "orders.db") == "o3_status"
    assert "order_notes" not in tables(demo / ".release" / "orders.db")
    st = run_json("status", cwd=demo)
    assert st["release"] == "v2.4" and st["state"] == "reverted"
    assert st["services"]["orders"] == {"app1": "v2.3", "app2": "v2.3"}

    # Reverting twice is harmless.
    before = events(demo, "app1")
    proc = run("revert", cwd=demo, check=0)
    assert "already reverted" in proc.stdout
    assert events(demo, "app1") == before


def test_revert_runs_in_exact_reverse(demo: Path) -> None:
    run("apply", "v2.3", cwd=demo, check=0)
    run("apply", "v2.4", cwd=demo, check=0)
    assert_all_at(demo, "v2.4")
    run("revert", cwd=demo, check=0)
    assert_all_at(demo, "v2.3")
    rows = journal_rows(demo, "select node, started_at, ended_at from steps where phase='revert'")
    start = {n: min(r[1] for r in rows if r[0] == n) for n, *_ in rows}
    end = {n: max(r[2] for r in rows if r[0] == n) for n, *_ in rows}
    g = demo_graph(demo)
    for a, b in g.edges:  # a is a dependency of b: b is reverted first
        if a in start and b in end:
            assert start[a] >= end[b], f"{a} reverted before its dependent {b}"
    # A second revert does not reach back to v2.3: the latest release, v2.4, is already reverted,
    # so it says so and changes nothing (exit 0) - no command runs, the journal gets no step.
    before = {h: events(demo, h) for h in ("app1", "app2", "edge1")}
    steps = journal_rows(demo, "select count(*) from steps")
    again = run("revert", cwd=demo, check=0)
    assert "v2.4" in again.stdout and "already reverted" in again.stdout
    assert {h: events(demo, h) for h in ("app1", "app2", "edge1")} == before
    assert journal_rows(demo, "select count(*) from steps") == steps
    assert_all_at(demo, "v2.3")
    assert revision(demo / ".release" / "orders.db") == HEADS["orders"]
    st = run_json("status", cwd=demo)
    assert (st["release"], st["state"]) == ("v2.4", "reverted")


def test_revert_first_release_removes_everything(demo: Path) -> None:
    run("apply", "v2.3", cwd=demo, check=0)
    run("revert", cwd=demo, check=0)
    assert_all_at(demo, None)
    assert revision(demo / ".release" / "orders.db") is None
    assert tables(demo / ".release" / "orders.db") == set()


def test_apply_after_failure_continues(demo: Path) -> None:
    run("apply", "v2.3", cwd=demo, check=0)
    fail_orders_on(demo, "app2", "v2.4")
    assert run("apply", "v2.4", cwd=demo).returncode == 1
    # Another release name is refused while v2.4 is failed.
    proc = run("apply", "v2.5", cwd=demo)
    assert proc.returncode == 2 and "v2.4 is failed" in proc.stderr
    app1_before = [e for e in events(demo, "app1") if e[3] == "orders"]
    copy = copy_demo(demo.parent / "fresh")
    (demo / "services.d" / "orders.yaml").write_text((copy / "services.d" / "orders.yaml").read_text())
    proc = run("apply", "v2.4", cwd=demo, check=0)
    assert_all_at(demo, "v2.4")
    # orders on app1 was done by the first attempt and is skipped now.
    assert [e for e in events(demo, "app1") if e[3] == "orders"] == app1_before
    hist = run_json("history", cwd=demo)
    assert [(h["release"], h["state"]) for h in hist] == [("v2.4", "applied"), ("v2.3", "applied")]
    # Revert restores what was there before the *first* attempt.
    run("revert", cwd=demo, check=0)
    assert_all_at(demo, "v2.3")


def test_health_failure_and_timeout(demo: Path) -> None:
    write(demo, {
        "services.d/catalog.yaml": "hosts: [backend]\ndeploy: 'mkdir -p c && echo $RELEASE_VERSION > c/v'\n"
                                   "health: test \"$RELEASE_HOST\" != app2\nmax_parallel: 1\n",
        "services.d/payments.yaml": "hosts: [app2]\ndeploy: sleep 30\ntimeout: 1\ndepends_on: [accounts]\n",
    })
    proc = run("apply", "v2.3", "--json", cwd=demo)
    assert proc.returncode == 1
    assert "health check failed on app2" in proc.stderr
    res = json.loads(proc.stdout)
    outcomes = {(s["node"], s["host"]): s["outcome"] for s in res["steps"]}
    assert outcomes[("catalog", "app1")] == "ok" and outcomes[("catalog", "app2")] == "failed"
    # inventory depends on catalog: never started anywhere.
    assert current(demo, "app1", "inventory") is None
    assert not any(e[3] == "inventory" for e in events(demo, "app1"))
    assert (demo / ".release/hosts/app2/c/v").read_text().strip() == "v2.3"
    run("revert", cwd=demo, check=0)
    # First release: revert runs the deploy command with an empty version on the changed hosts.
    assert (demo / ".release/hosts/app1/c/v").read_text().strip() == ""
    assert (demo / ".release/hosts/app2/c/v").read_text().strip() == ""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_timeout_kills_and_fails(demo: Path) -> None:
    # The shell waits for a sleep of its own: killing the shell alone would leave the sleep
    # running; only killing the whole command, both, guarantees `late` is never touched.
    write(demo, {"services.d/catalog.yaml": "hosts: [app1]\n"
                                            "deploy: 'echo $$ > shell.pid; sleep 30 & echo $! > sleep.pid; wait; "
                                            "touch late'\ntimeout: 1\nrevert: 'touch reverted'\n"})
    proc = run("apply", "v2.3", cwd=demo)
    assert proc.returncode == 1
    assert "timed out" in proc.stderr and "catalog on app1" in proc.stderr
    host = demo / ".release/hosts/app1"
    pids = [int((host / f"{name}.pid").read_text()) for name in ("shell", "sleep")]
    wait_for(lambda: all(gone(pid) for pid in pids), timeout=10, what="the timed-out command to be killed")
    assert not (host / "late").exists()
    assert run_json("status", cwd=demo)["state"] == "failed"
    run("revert", cwd=demo, check=0)
    assert (demo / ".release/hosts/app1/reverted").exists()


def test_graph_formats(demo: Path) -> None:
    text = run("graph", cwd=demo, check=0).stdout
    assert "wave 1:" in text and "orders (service) <- accounts, inventory, orders-db" in text
    dot = run("graph", "--format", "dot", cwd=demo, check=0).stdout
    assert '"orders-db" -> "orders";' in dot
    mer = run("graph", "--format", "mermaid", cwd=demo, check=0).stdout
    assert mer.startswith("flowchart LR")
    svg = run("graph", "--format", "svg", cwd=demo, check=0).stdout
    assert "<svg" in svg and "orders" in svg


def test_global_options_after_command(demo: Path, tmp_path: Path) -> None:
    proc = run("plan", "v2.3", "-C", str(demo), "--json", cwd=tmp_path, check=0)
    assert json.loads(proc.stdout)["release"] == "v2.3"
    journal = tmp_path / "j.db"
    run("apply", "v2.3", "--journal", f"sqlite:///{journal}", "-C", str(demo), cwd=tmp_path, check=0)
    assert journal.exists() and not (demo / ".release" / "journal.db").exists()


def test_revert_with_empty_journal_is_unknown_release(demo: Path) -> None:
    proc = run("revert", cwd=demo)
    assert proc.returncode == 2 and "no release" in proc.stderr
    assert not (demo / ".release").exists()


@pytest.mark.e2e
def test_plain_lines_off_terminal_live_view_on_terminal(demo: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    proc = run("apply", "v2.3", cwd=demo, check=0)
    assert "\x1b" not in proc.stderr + proc.stdout  # off a terminal: plain lines
    assert "deploy.done" in proc.stderr and "orders@app2" in proc.stderr
    run("revert", cwd=demo, check=0)

    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["COLUMNS"] = "120"
    child = subprocess.Popen([sys.executable, "-m", "orchestrator", "apply", "v2.4", "-y"], cwd=demo,
                             stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert child.wait(60) == 0
    text = out.decode(errors="replace")
    assert "\x1b[" in text  # a live view, redrawn in place
    assert "waits on" in text and "notifications" in text and "release v2.4 applied" in text


def test_auto_revert(demo: Path) -> None:
    v24_that_breaks_orders_on_app2(demo)
    proc = run("apply", "v2.4", "--auto-revert", cwd=demo)
    assert proc.returncode == 1
    assert "orders broke on app2" in proc.stderr and "reverted" in proc.stderr
    assert_all_at(demo, "v2.3")
    assert revision(demo / ".release" / "orders.db") == "o3_status"
    st = run_json("status", cwd=demo)
    assert (st["release"], st["state"]) == ("v2.4", "reverted")


def test_resume_with_changed_manifests_reverts_what_ran(demo: Path) -> None:
    """A service added and a deploy fixed between two attempts: revert works from both."""
    run("apply", "v2.3", cwd=demo, check=0)
    fail_orders_on(demo, "app2", "v2.4")
    assert run("apply", "v2.4", cwd=demo).returncode == 1
    fixed = copy_demo(demo.parent / "fresh")
    write(demo, {"services.d/orders.yaml": (fixed / "services.d/orders.yaml").read_text(),
                 "services.d/extra.yaml": (fixed / "services.d/web.yaml").read_text().replace(
                     "[frontend]", "[app1]").replace("name: web", "name: extra").replace(
                     "depends_on: [orders, payments, catalog]", "depends_on: [orders]")})
    run("apply", "v2.4", cwd=demo, check=0)
    assert current(demo, "app1", "extra") == "v2.4"
    # The repository goes back to before both attempts (`git checkout` of the old commit).
    (demo / "services.d/extra.yaml").unlink()
    fail_orders_on(demo, "app2", "v2.4")
    run("revert", cwd=demo, check=0)
    assert_all_at(demo, "v2.3")
    assert current(demo, "app1", "extra") is None


def test_secrets_never_reach_output_logs_or_journal(demo: Path) -> None:
    secret = "s3cr3t-t0ken-value"
    write(demo, {"services.d/catalog.yaml": "hosts: [app1]\n"
                 "deploy: 'echo \"token is $API_TOKEN\"; echo \"token is $API_TOKEN\" >&2; exit 1'\n"
                 "revert: 'true'\n"})
    proc = run("apply", "v2.3", "--json", cwd=demo, env={"API_TOKEN": secret})
    assert proc.returncode == 1
    assert "token is ***" in proc.stderr
    everything = proc.stdout + proc.stderr
    for log in (demo / ".release" / "logs").glob("*.jsonl"):
        everything += log.read_text()
    everything += repr(journal_rows(demo, "select * from steps")) + repr(journal_rows(demo, "select * from releases"))
    assert secret not in everything


def test_resume_after_renaming_and_removing_manifests_still_reverts(demo: Path) -> None:
    run("apply", "v2.3", cwd=demo, check=0)
    fail_orders_on(demo, "app2", "v2.4")
    assert run("apply", "v2.4", cwd=demo).returncode == 1
    fixed = copy_demo(demo.parent / "fresh")
    (demo / "services.d/orders.yaml").unlink()
    write(demo, {"services.d/orders-svc.yaml": (fixed / "services.d/orders.yaml").read_text()})
    (demo / "services.d/web.yaml").unlink()
    inv = demo / "services.d/hosts.yaml"
    inv.write_text(inv.read_text().replace("  frontend: [edge1]\n", ""))
    run("apply", "v2.4", cwd=demo, check=0)
    assert current(demo, "app2", "orders") == "v2.4"
    run("revert", cwd=demo, check=0)
    assert current(demo, "app2", "orders") == "v2.3" and current(demo, "app1", "orders") == "v2.3"
    assert current(demo, "edge1", "web") == "v2.3"  # never touched by v2.4
