"""Bad input is refused before anything runs: exit 2, a message naming file and field, no changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import closed_port, cli, run, run_json, write


def assert_refused(root: Path, *expected: str) -> str:
    proc = run("apply", "v2.3", cwd=root)
    assert proc.returncode == 2, proc.stderr
    for text in expected:
        assert text in proc.stderr, proc.stderr
    # Nothing ran: no host directory, no database file, no journal release.
    assert not (root / ".release" / "hosts").exists()
    assert not (root / ".release" / "accounts.db").exists()
    assert not (root / ".release" / "journal.db").exists()
    return proc.stderr


CASES = {
    "malformed yaml": ({"services.d/orders.yaml": "name: orders\nhosts: [backend\n"},
                       ["services.d/orders.yaml", "malformed YAML"]),
    "unknown field": ({"services.d/web.yaml": "hosts: [frontend]\ndeploy: 'true'\ndeply: x\n"},
                      ["services.d/web.yaml: deply: unknown field"]),
    "wrong type": ({"services.d/web.yaml": "hosts: [frontend]\ndeploy: 'true'\nhealth_retries: many\n"},
                   ["services.d/web.yaml: health_retries"]),
    "missing deploy": ({"services.d/web.yaml": "hosts: [frontend]\n"},
                       ["services.d/web.yaml: deploy: required field is missing"]),
    "bad version": ({"services.d/web.yaml": "hosts: [frontend]\ndeploy: 'true'\nversion: 'v1;rm -rf /'\n"},
                    ["services.d/web.yaml: version", "does not match"]),
    "bad name": ({"services.d/web.yaml": "name: 'we b'\nhosts: [frontend]\ndeploy: 'true'\n"},
                 ["services.d/web.yaml: name"]),
    "unknown dependency": ({"services.d/web.yaml": "hosts: [frontend]\ndeploy: 'true'\ndepends_on: [acounts]\n"},
                           ["services.d/web.yaml: depends_on: unknown node 'acounts'"]),
    "unknown host": ({"services.d/web.yaml": "hosts: [edge9]\ndeploy: 'true'\n"},
                     ["services.d/web.yaml: hosts: unknown host or group 'edge9'"]),
    "no hosts": ({"services.d/web.yaml": "hosts: []\ndeploy: 'true'\n"}, ["services.d/web.yaml: hosts:"]),
    "group with no hosts": ({"services.d/hosts.yaml": "hosts:\n  app1: {transport: local}\n  app2: {transport: local}\n"
                                                       "  edge1: {transport: local}\ngroups:\n  backend: [app1, app2]\n"
                                                       "  frontend: []\n"},
                            ["services.d/web.yaml: hosts: service 'web' has no hosts"]),
    "version read as a number": ({"services.d/web.yaml": "hosts: [frontend]\ndeploy: 'true'\nversion: 1.10\n"},
                                 ["services.d/web.yaml: version: 1.1 is a number in YAML; quote it"]),
    "duplicate": ({"services.d/web2.yaml": "name: web\nhosts: [frontend]\ndeploy: 'true'\n"},
                  ["duplicate name 'web'"]),
    "cycle": ({"services.d/accounts.yaml": "hosts: [backend]\ndeploy: 'true'\ndepends_on: [orders]\n"},
              ["cycle", "orders -> accounts -> orders"]),
    "not a script directory": ({"services.d/orders-db.yaml": "kind: database\nurl: sqlite:///.release/o.db\n"
                                "migrations: migrations/nowhere\n"},
                               ["services.d/orders-db.yaml: migrations:", "orders-db"]),
    "unknown target": ({"services.d/orders-db.yaml": "kind: database\nurl: sqlite:///.release/o.db\n"
                        "migrations: migrations/orders\ntarget: zz99\n"},
                       ["services.d/orders-db.yaml", "zz99"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused(demo: Path, case: str) -> None:
    files, expected = CASES[case]
    write(demo, files)
    assert_refused(demo, *expected)
    assert run("validate", cwd=demo).returncode == 2


def test_all_problems_reported_at_once(demo: Path) -> None:
    write(demo, {
        "services.d/web.yaml": "hosts: [edge9]\ndeploy: 'true'\n",
        "services.d/payments.yaml": "hosts: [app2]\ndeploy: 'true'\ndepends_on: [nope]\n",
    })
    err = assert_refused(demo, "services.d/web.yaml", "services.d/payments.yaml")
    assert "edge9" in err and "'nope'" in err


def test_bad_release_name(demo: Path) -> None:
    proc = run("apply", "v1;rm -rf /", cwd=demo)
    assert proc.returncode == 2
    assert "does not match" in proc.stderr
    assert not (demo / ".release").exists()  # rejected before anything, the journal included


def test_a_broken_file_is_reported_once_not_echoed(demo: Path) -> None:
    """orders.yaml has a bad field: that is the problem, not that three services depending on
    orders now name an "unknown node"; pydantic's "Value error," prefix stays out of messages."""
    path = demo / "services.d" / "orders.yaml"
    path.write_text(path.read_text() + "health_retries: -1\n")
    write(demo, {"services.d/web.yaml": "hosts: [frontend]\ndeploy: 'true'\nmax_parallel: 0%\n"
                                        "depends_on: [orders, payments, catalog]\n"})
    proc = run("validate", cwd=demo)
    assert proc.returncode == 2
    assert "services.d/orders.yaml: health_retries:" in proc.stderr
    assert "services.d/web.yaml: max_parallel:" in proc.stderr
    assert "unknown node" not in proc.stderr and "Value error" not in proc.stderr, proc.stderr


def test_numbers_in_yaml_stay_as_written(demo: Path) -> None:
    """YAML 1.1 reads 010 as 8 and 0x1F as 31: a version must deploy exactly as written."""
    write(demo, {"services.d/web.yaml": "hosts: [frontend]\ndeploy: 'true'\nversion: 010\n",
                 "services.d/payments.yaml": "hosts: [backend]\ndeploy: 'true'\nversion: 0x1F\n"
                                             "depends_on: [accounts]\ntimeout: 60\n"})
    steps = {s["node"]: s for s in run_json("plan", "v1", cwd=demo)["steps"]}
    assert steps["web"]["to"] == "010" and steps["payments"]["to"] == "0x1F"


def test_journal_url_of_an_unsupported_kind(demo: Path) -> None:
    for url in ("mysql://u@127.0.0.1/x", "not a url", "postgresql+psycopg2://u@127.0.0.1/x"):
        proc = run("status", "--journal", url, cwd=demo)
        assert proc.returncode == 2 and "not supported" in proc.stderr and "internal error" not in proc.stderr, url


def test_validate_ok_on_demo(demo: Path) -> None:
    proc = run("validate", cwd=demo, check=0)
    assert "7 services, 2 databases" in proc.stdout


@pytest.mark.e2e
def test_usage_error_exit_2(demo: Path) -> None:
    assert cli("apply", cwd=demo).returncode == 2  # the process's exit status
    assert run("nonsense", cwd=demo).returncode == 2


def test_jump_hosts_must_be_ssh_and_not_loop(demo: Path) -> None:
    inv = (demo / "services.d/hosts.yaml").read_text()
    write(demo, {"services.d/hosts.yaml": inv.replace(
        "  edge1: {transport: local}\n",
        "  edge1: {transport: local}\n  j1: {address: 198.18.0.201, jump: j2}\n  j2: {address: 198.18.0.202, jump: j1}\n"
        "  j3: {address: 198.18.0.203, jump: app1}\n")})
    err = assert_refused(demo, "hosts.j1.jump: jump hosts loop: j1 -> j2 -> j1", "hosts.j3.jump: 'app1' is not an ssh host")
    assert "j2" in err


@pytest.mark.e2e
def test_detailed_exitcode_usage_error_is_1(demo: Path) -> None:
    # 2 would read as "changes" to a pipeline: any error is 1 with --detailed-exitcode.
    assert cli("plan", "--detailed-exitcode", cwd=demo).returncode == 1  # the process's exit status
    assert run("plan", "v1", "--detailed-exitcode", "--log-format", "xml", cwd=demo).returncode == 1


def test_os_errors_are_messages_not_tracebacks(demo: Path) -> None:
    proc = run("graph", "-o", "/nonexistent/dir/graph.txt", cwd=demo)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_unreachable_journal_is_exit_1_and_masks_its_password(demo: Path) -> None:
    proc = run("apply", "v2.3", "--journal", f"postgresql://u:hunter2pw@127.0.0.1:{closed_port()}/j", cwd=demo)
    assert proc.returncode == 1
    assert "journal postgresql+psycopg://u:***@127.0.0.1" in proc.stderr and "hunter2pw" not in proc.stderr
    assert not (demo / ".release" / "hosts").exists()
