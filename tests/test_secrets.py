"""Secrets: what the journal keeps of the manifests, what a revert runs, what output, logs and
commands get. Each test runs the CLI as a user does and looks at what the user would see: the
commands' own records on the host, the journal's bytes, stdout, stderr, the run logs."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import pytest

from helpers import cli, closed_port, copy_demo, current, revision, run, write

REGISTRY = "docker://registry.local:5000/shop/web@sha256:abc"
ARTIFACT = "https://user:tok3n@artifacts.local/x.tgz"
TOKEN = "pl4nted-T0ken-9f8e7d6c"  # the value of a secret environment variable


def project(root: Path, services: dict[str, str], settings: str | None = None) -> Path:
    """A release repository with one local host, app1, and the given service manifests."""
    files = {"services.d/hosts.yaml": "hosts:\n  app1: {transport: local}\n"}
    files.update({f"services.d/{name}.yaml": text for name, text in services.items()})
    if settings is not None:
        files["services.d/release.yaml"] = settings
    return write(root, files)


def host_file(root: Path, name: str) -> str:
    path = root / ".release" / "hosts" / "app1" / name
    return path.read_text() if path.exists() else ""


def journal_bytes(root: Path) -> bytes:
    """The journal as it is on disk: the SQLite file and its write-ahead log, if any."""
    return b"".join(p.read_bytes() for p in sorted((root / ".release").glob("journal.db*")))


def logs(root: Path) -> str:
    return "".join(p.read_text() for p in (root / ".release" / "logs").glob("*.jsonl"))


# --------------------------------------------------------------- what a revert runs


def test_revert_runs_urls_of_the_applied_command_byte_for_byte(tmp_path: Path) -> None:
    # The deploy names an image by registry port and digest, and an artifact URL with the token
    # it needs: neither may reach the revert as `***`.
    deploy = f"printf '%s\\n' \"$RELEASE_ACTION ${{RELEASE_VERSION:-none}} {REGISTRY} {ARTIFACT}\" >> pulled.log\n"
    root = project(tmp_path / "repo", {"web": f"hosts: [app1]\ndeploy: |\n  {deploy}"})
    run("apply", "v1", cwd=root, check=0)
    assert host_file(root, "pulled.log") == f"deploy v1 {REGISTRY} {ARTIFACT}\n"
    # `git revert` of the release repository: the file on disk is not the applied one any more.
    write(root, {"services.d/web.yaml": "hosts: [app1]\ndeploy: echo other > other.log\n"})
    run("revert", cwd=root, check=0)
    assert host_file(root, "pulled.log").splitlines()[-1] == f"revert none {REGISTRY} {ARTIFACT}"
    assert host_file(root, "other.log") == ""


def token_service() -> str:
    # The token is written into the manifest itself; the command records a digest of the token
    # it received, and prints the token (output masking is checked too).
    return ("hosts: [app1]\n"
            "deploy: |\n"
            f"  printf '%s' '{TOKEN}' | sha256sum | cut -c1-16 > used-token\n"
            f"  echo \"$RELEASE_ACTION ${{RELEASE_VERSION:-none}} with {TOKEN}\" | tee -a actions.log\n")


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16] + "\n"


def test_secret_value_in_a_manifest_is_journaled_as_a_reference_and_resolved_at_revert(tmp_path: Path) -> None:
    root = project(tmp_path / "repo", {"web": token_service()})
    env = {"API_TOKEN": TOKEN}
    outputs = [run("apply", "v1", "-v", cwd=root, env=env, check=0)]
    assert host_file(root, "used-token") == digest(TOKEN)
    write(root, {"services.d/web.yaml": "hosts: [app1]\ndeploy: echo other > used-token\n"})
    outputs.append(run("revert", "-v", cwd=root, env=env, check=0))
    # The revert ran the applied command, token included, from the environment.
    assert host_file(root, "used-token") == digest(TOKEN)
    assert host_file(root, "actions.log").splitlines()[-1] == f"revert none with {TOKEN}"
    written = journal_bytes(root)
    assert written and TOKEN.encode() not in written
    assert b"${API_TOKEN}" in written  # the journal's copy says where it goes
    seen = "".join(p.stdout + p.stderr for p in outputs) + logs(root)
    assert "with ***" in seen and TOKEN not in seen


def test_revert_refuses_when_a_referenced_secret_is_not_set(tmp_path: Path) -> None:
    root = project(tmp_path / "repo", {"web": token_service()})
    run("apply", "v1", cwd=root, env={"API_TOKEN": TOKEN}, check=0)
    write(root, {"services.d/web.yaml": "hosts: [app1]\ndeploy: echo other > used-token\n"})
    before = host_file(root, "actions.log")
    proc = run("revert", cwd=root, check=2)
    assert "API_TOKEN" in proc.stderr and "services.d/web.yaml" in proc.stderr, proc.stderr
    assert "nothing was reverted" in proc.stderr
    # Nothing ran, and the release is still applied: once the variable is set, revert works.
    assert host_file(root, "actions.log") == before and host_file(root, "used-token") == digest(TOKEN)
    assert json.loads(run("status", "--json", cwd=root, check=0).stdout)["state"] == "applied"
    run("revert", cwd=root, env={"API_TOKEN": TOKEN}, check=0)
    assert host_file(root, "actions.log").splitlines()[-1] == f"revert none with {TOKEN}"


def test_references_survive_a_resumed_apply_that_drops_the_service(tmp_path: Path) -> None:
    # Attempt 1 deploys web (with the token) and fails on api; attempt 2 no longer has web (its
    # file was removed): the first attempt's copy of web is kept, reference and all.
    broken = "hosts: [app1]\ndepends_on: [web]\ndeploy: exit 3\n"
    root = project(tmp_path / "repo", {"web": token_service(), "api": broken})
    env = {"API_TOKEN": TOKEN}
    assert run("apply", "v1", cwd=root, env=env).returncode == 1
    (root / "services.d" / "web.yaml").unlink()
    write(root, {"services.d/api.yaml": "hosts: [app1]\ndeploy: echo api >> api.log\n"})
    run("apply", "v1", cwd=root, env=env, check=0)
    run("revert", cwd=root, env=env, check=0)
    assert host_file(root, "actions.log").splitlines()[-1] == f"revert none with {TOKEN}"
    assert TOKEN.encode() not in journal_bytes(root)


def test_revert_refuses_a_journal_copy_masked_by_an_older_version(tmp_path: Path) -> None:
    # Journals written before references existed masked every URL password in the copy. Such a
    # copy is run only where the file on disk shows what was masked; otherwise revert refuses.
    deploy = f"printf '%s\\n' \"$RELEASE_ACTION {ARTIFACT}\" >> pulled.log\n"
    applied = f"hosts: [app1]\ndeploy: |\n  {deploy}"
    root = project(tmp_path / "repo", {"web": applied})
    run("apply", "v1", cwd=root, check=0)
    con = sqlite3.connect(root / ".release" / "journal.db")
    with con:
        (manifests,) = con.execute("select manifests from releases").fetchone()
        old = json.loads(manifests)
        old = {"sources": {p: t.replace("user:tok3n@", "user:***@") for p, t in old["sources"].items()},
               "downgrades": old["downgrades"]}
        con.execute("update releases set manifests = ?", (json.dumps(old),))
    con.close()
    write(root, {"services.d/web.yaml": "hosts: [app1]\ndeploy: echo other > other.log\n"})
    proc = run("revert", cwd=root, check=2)
    assert "services.d/web.yaml: service web" in proc.stderr and "older version" in proc.stderr, proc.stderr
    assert host_file(root, "pulled.log").splitlines() == [f"deploy {ARTIFACT}"]
    # The file as it was applied gives the password back: the revert runs exactly that.
    write(root, {"services.d/web.yaml": applied})
    run("revert", cwd=root, check=0)
    assert host_file(root, "pulled.log").splitlines()[-1] == f"revert {ARTIFACT}"


# ---------------------------------------------------------- passwords of database URLs


def test_query_string_password_is_kept_out_of_the_journal_and_revert_needs_it(tmp_path: Path) -> None:
    secret = "Qs3cret-in-query"
    demo = copy_demo(tmp_path / "repo")
    db = demo / "services.d" / "orders-db.yaml"
    applied = db.read_text().replace("sqlite:///.release/orders.db", f"sqlite:///.release/orders.db?password={secret}")
    write(demo, {"services.d/orders-db.yaml": applied})
    outputs = [run("apply", "v1", "-v", cwd=demo, check=0)]
    assert revision(demo / ".release" / "orders.db") == "o3_status"
    written = journal_bytes(demo)
    assert secret.encode() not in written and b"?password=***" in written
    # The database moved (`git checkout` of another commit): today's manifests no longer have
    # this URL's password, so revert refuses before it changes anything, and says what to do.
    write(demo, {"services.d/orders-db.yaml": applied.replace(".release/orders.db", ".release/moved.db")})
    proc = run("revert", cwd=demo, check=2)
    outputs.append(proc)
    assert "database orders-db" in proc.stderr and "${VAR}" in proc.stderr, proc.stderr
    assert current(demo, "app1", "orders") == "v1" and revision(demo / ".release" / "orders.db") == "o3_status"
    # Back as applied: the password comes from today's file, and the revert goes through.
    write(demo, {"services.d/orders-db.yaml": "# as of v1\n" + applied})
    outputs.append(run("revert", cwd=demo, check=0))
    assert revision(demo / ".release" / "orders.db") is None and current(demo, "app1", "orders") is None
    assert secret not in "".join(p.stdout + p.stderr for p in outputs) + logs(demo)


def orders_db_unreachable(tmp_path: Path, url: str) -> tuple[Path, int]:
    """The demo with orders-db at `url`, whose PORT is one nothing listens on."""
    demo = copy_demo(tmp_path / "repo")
    port = closed_port()
    write(demo, {"services.d/orders-db.yaml": (
        f"kind: database\nmigrations: migrations/orders\nurl: {url.replace('PORT', str(port))}\n")})
    return demo, port


def test_query_string_password_never_shows_in_connection_errors(tmp_path: Path) -> None:
    secret = "Qs3cret-in-query"
    demo, port = orders_db_unreachable(tmp_path, f"postgresql://shop@127.0.0.1:PORT/shop?password={secret}")
    proc = run("plan", "v1", cwd=demo, check=1)
    assert "orders-db" in proc.stderr and f"127.0.0.1:{port}" in proc.stderr and "password=***" in proc.stderr
    assert secret not in proc.stdout + proc.stderr
    journal = f"postgresql://release@127.0.0.1:{port}/journal?password={secret}"
    for args in (("status",), ("history",), ("--journal", journal, "status")):
        proc = run(*args, cwd=demo, env={"RELEASE_JOURNAL": journal})
        assert proc.returncode == 1 and f"127.0.0.1:{port}" in proc.stderr, proc.stderr
        assert secret not in proc.stdout + proc.stderr


def test_variable_password_with_at_and_slash_reaches_the_right_server(tmp_path: Path) -> None:
    # SHOP_DB_PASS is not named like a secret: only parsing the URL keeps it out of the output.
    password = "p@ss/w0rd:x"
    demo, port = orders_db_unreachable(tmp_path, "postgresql://shop:${SHOP_DB_PASS}@127.0.0.1:PORT/shop")
    proc = run("plan", "v1", cwd=demo, env={"SHOP_DB_PASS": password}, check=1)
    assert f"cannot connect to postgresql+psycopg://shop:***@127.0.0.1:{port}/shop" in proc.stderr, proc.stderr
    for fragment in ("p@ss", "w0rd", "p%40ss", "%2Fw0rd"):
        assert fragment not in proc.stdout + proc.stderr


# ------------------------------------------------------------ secrets: in release.yaml


def test_listed_secrets_are_masked_whatever_their_names_and_lengths(tmp_path: Path) -> None:
    key, short = "k3y-value-xyz", "Qz7"
    service = ("hosts: [app1]\n"
               f"deploy: 'echo \"key {key} is $API_KEY, pass $PGPASS\"; echo \"pass $PGPASS\" >&2; exit 1'\n")
    root = project(tmp_path / "repo", {"web": service}, settings="secrets: [API_KEY, PGPASS]\n")
    proc = run("apply", "v1", "-v", cwd=root, env={"API_KEY": key, "PGPASS": short}, check=1)
    assert "key *** is ***, pass ***" in proc.stderr, proc.stderr
    seen = proc.stdout + proc.stderr + logs(root)
    assert key not in seen and short not in seen
    assert key.encode() not in journal_bytes(root)


def test_history_and_status_mask_listed_secrets_without_reading_the_manifests(tmp_path: Path) -> None:
    # The secret reached the journal before it was listed (an older checkout without `secrets:`);
    # once listed, `history` and `status` never show it, even with a service manifest broken.
    key = "k3y-value-xyz"
    root = project(tmp_path / "repo", {"web": "hosts: [app1]\ndeploy: 'echo \"failed with $API_KEY\" >&2; exit 1'\n"})
    run("apply", "v1", cwd=root, env={"API_KEY": key}, check=1)
    assert key in json.dumps(json.loads(run("history", "--json", cwd=root, env={"API_KEY": key}, check=0).stdout))
    write(root, {"services.d/release.yaml": "secrets: [API_KEY]\n", "services.d/broken.yaml": "hosts: [\n"})
    hist = run("history", "--json", cwd=root, env={"API_KEY": key}, check=0)
    assert "failed with ***" in hist.stdout and key not in hist.stdout + hist.stderr
    port = closed_port()
    journal = f"postgresql://release@127.0.0.1:{port}/journal?application_name={key}"
    st = run("status", "--journal", journal, cwd=root, env={"API_KEY": key}, check=1)
    assert f"127.0.0.1:{port}" in st.stderr and key not in st.stdout + st.stderr


# ------------------------------------------------------------- what commands inherit


@pytest.mark.e2e  # RELEASE_FAULT is read only in a process of its own
def test_local_commands_do_not_inherit_the_tools_own_configuration(tmp_path: Path) -> None:
    record = ('echo "journal=${RELEASE_JOURNAL-unset} fault=${RELEASE_FAULT-unset} '
              'name=$RELEASE_NAME action=$RELEASE_ACTION project=$RELEASE_PROJECT_DIR" > env.txt')
    root = project(tmp_path / "repo", {"web": f"hosts: [app1]\ndeploy: '{record}'\n"})
    env = {"RELEASE_JOURNAL": f"sqlite:///{tmp_path}/elsewhere.db",
           "RELEASE_FAULT": "after-intent:no-such-node"}  # a valid fault that never fires
    cli("apply", "v1", cwd=root, env=env, check=0)
    assert (tmp_path / "elsewhere.db").exists()  # the tool itself did use its journal
    assert host_file(root, "env.txt") == f"journal=unset fault=unset name=v1 action=deploy project={root}\n"


# ------------------------------------------------------------------- masking is linear


def _masking_time(text: str) -> float:
    """The best of three runs: one slow run on a busy machine is noise, not a trend."""
    from orchestrator.secrets import mask_text

    took = []
    for _ in range(3):
        start = time.perf_counter()
        masked = mask_text(text)
        took.append(time.perf_counter() - start)
        assert len(masked) >= len(text) // 2  # masked, not dropped
        if took[-1] >= 1:
            break
    return min(took)


@pytest.mark.parametrize("shape", [
    lambda n: "x://" + "a" * n,                # a URL whose "password" never ends
    lambda n: "token x://user:" + "a" * n,      # the same after a user name
    lambda n: "a" * n,                         # a token-like word
    lambda n: "?" + "a" * n + "&" * 8,         # a query string whose key never ends
])
def test_masking_a_long_token_like_line_is_linear(shape, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("SOME_TOKEN", "not-in-the-text-0123")
    small = _masking_time(shape(80_000))
    assert small < 1, small
    large = _masking_time(shape(800_000))
    assert large < 1, (small, large)
    # Below 10 ms the clock measures the machine, not the algorithm: a quadratic one takes
    # seconds at 80 KB already.
    assert large / max(small, 0.01) <= 20, (small, large)


def test_masking_many_strings_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # 10,000 services log several events each; a large environment must not be scanned per event.
    from orchestrator.secrets import mask_text

    for i in range(2000):
        monkeypatch.setenv(f"UNRELATED_VARIABLE_{i}", f"value-{i}")
    monkeypatch.setenv("DEPLOY_TOKEN", "d3ploy-t0ken")
    start = time.perf_counter()
    masked = [mask_text(f"orders@app{i}: deployed with d3ploy-t0ken") for i in range(60_000)]
    assert time.perf_counter() - start < 5
    assert masked[-1] == "orders@app59999: deployed with ***"
