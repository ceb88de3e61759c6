"""Secrets: what the journal keeps of the manifests, what a revert runs, what output, logs and
commands get. Each test runs the CLI as a user does and looks at what the user would see: the
commands' own records on the host, the journal's bytes, stdout, stderr, the run logs."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from helpers import cli, copy_demo, current, revision, write

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


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


# --------------------------------------------------------------- what a revert runs


def token_service() -> str:
    # The token is written into the manifest itself; the command records a digest of the token
    # it received, and prints the token (output masking is checked too).
    return ("hosts: [app1]\n"
            "deploy: |\n"
            f"  printf '%s' '{TOKEN}' | sha256sum | cut -c1-16 > used-token\n"
            f"  echo \"$RELEASE_ACTION ${{RELEASE_VERSION:-none}} with {TOKEN}\" | tee -a actions.log\n")


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16] + "\n"


def test_query_string_password_never_shows_in_connection_errors(tmp_path: Path) -> None:
    secret = "Qs3cret-in-query"
    demo = copy_demo(tmp_path / "repo")
    port = closed_port()
    write(demo, {"services.d/orders-db.yaml": (
        "kind: database\nmigrations: migrations/orders\n"
        f"url: postgresql://shop@127.0.0.1:{port}/shop?password={secret}\n")})
    proc = cli("plan", "v1", cwd=demo, check=1)
    assert "orders-db" in proc.stderr and f"127.0.0.1:{port}" in proc.stderr and "password=***" in proc.stderr
    assert secret not in proc.stdout + proc.stderr
    journal = f"postgresql://release@127.0.0.1:{port}/journal?password={secret}"
    for args in (("status",), ("history",), ("--journal", journal, "status")):
        proc = cli(*args, cwd=demo, env={"RELEASE_JOURNAL": journal})
        assert proc.returncode == 1 and f"127.0.0.1:{port}" in proc.stderr, proc.stderr
        assert secret not in proc.stdout + proc.stderr


def test_variable_password_with_at_and_slash_reaches_the_right_server(tmp_path: Path) -> None:
    # SHOP_DB_PASS is not named like a secret: only parsing the URL keeps it out of the output.
    password = "p@ss/w0rd:x"
    demo = copy_demo(tmp_path / "repo")
    port = closed_port()
    write(demo, {"services.d/orders-db.yaml": (
        "kind: database\nmigrations: migrations/orders\n"
        f"url: postgresql://shop:${{SHOP_DB_PASS}}@127.0.0.1:{port}/shop\n")})
    proc = cli("plan", "v1", cwd=demo, env={"SHOP_DB_PASS": password}, check=1)
    assert f"cannot connect to postgresql+psycopg://shop:***@127.0.0.1:{port}/shop" in proc.stderr, proc.stderr
    for fragment in ("p@ss", "w0rd", "p%40ss", "%2Fw0rd"):
        assert fragment not in proc.stdout + proc.stderr


# ------------------------------------------------------------ secrets: in release.yaml


def test_history_and_status_mask_listed_secrets_without_reading_the_manifests(tmp_path: Path) -> None:
    # The secret reached the journal before it was listed (an older checkout without `secrets:`);
    # once listed, `history` and `status` never show it, even with a service manifest broken.
    key = "k3y-value-xyz"
    root = project(tmp_path / "repo", {"web": "hosts: [app1]\ndeploy: 'echo \"failed with $API_KEY\" >&2; exit 1'\n"})
    cli("apply", "v1", cwd=root, env={"API_KEY": key}, check=1)
    assert key in json.dumps(json.loads(cli("history", "--json", cwd=root, env={"API_KEY": key}, check=0).stdout))
    write(root, {"services.d/release.yaml": "secrets: [API_KEY]\n", "services.d/broken.yaml": "hosts: [\n"})
    hist = cli("history", "--json", cwd=root, env={"API_KEY": key}, check=0)
    assert "failed with ***" in hist.stdout and key not in hist.stdout + hist.stderr
    port = closed_port()
    journal = f"postgresql://release@127.0.0.1:{port}/journal?application_name={key}"
    st = cli("status", "--journal", journal, cwd=root, env={"API_KEY": key}, check=1)
    assert f"127.0.0.1:{port}" in st.stderr and key not in st.stdout + st.stderr


# ------------------------------------------------------------- what commands inherit


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
