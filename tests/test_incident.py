"""What an operator reads during an incident: `show`, `history`, `revert --dry-run`, and the CLI's
own surface (`--version`, JSON errors, `schema`), on the embedded demo with `local` hosts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from helpers import SERVICES, add_notes_revision, fail_orders_on, write
from test_transport_plugin import with_plugin  # noqa: F401 - a fixture: a third transport installed
from orchestrator import commands
from orchestrator.cli import main
from orchestrator.errors import StepFailed
from orchestrator.graph import build_graph
from orchestrator.manifests import load_project

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
REPO = Path(__file__).resolve().parent.parent


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`release ARGS` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> object:
    rc, out, err = run(capsys, *args, "--json")
    assert rc == 0, err
    return json.loads(out)


def break_orders_on_app2(root: Path) -> None:
    """v2.4's orders deploy fails on app2 (exit 3) after printing an escape sequence to stderr."""
    fail_orders_on(root, "app2", "v2.4")
    path = root / "services.d" / "orders.yaml"
    path.write_text(path.read_text().replace('echo "orders broke on app2" >&2',
                                             r'printf "warming up\n\033[31morders broke on app2\n" >&2'))


# -- show --------------------------------------------------------------------------------------


def test_show_latest_and_named_release(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    commands.apply(demo, "v2.3")
    break_orders_on_app2(demo)
    with pytest.raises(StepFailed):
        commands.apply(demo, "v2.4")

    latest = run_json(capsys, "show", "-C", str(demo))
    assert latest["release"] == "v2.4" and latest["state"] == "failed" and latest["previous"] == "v2.3"
    assert "@" in latest["run_by"] and ISO.match(latest["started_at"]) and ISO.match(latest["finished_at"])
    steps = {(s["phase"], s["node"], s["host"]): s for s in latest["steps"]}
    failed = steps[("apply", "orders", "app2")]
    assert (failed["action"], failed["outcome"], failed["exit_code"]) == ("deploy", "failed", 3)
    assert failed["stderr"].strip().endswith("\x1b[31morders broke on app2")  # JSON keeps it exactly
    assert failed["from"] == "v2.3" and failed["to"] == "v2.4" and failed["duration"] >= 0
    ok = steps[("apply", "orders", "app1")]
    assert (ok["outcome"], ok["exit_code"]) == ("ok", 0)

    named = run_json(capsys, "show", "v2.3", "-C", str(demo))
    assert named["release"] == "v2.3" and named["state"] == "applied"
    migrations = [s["revision"] for s in named["steps"] if s["node"] == "orders-db"]
    assert migrations == ["o1_orders", "o2_items", "o3_status"]
    assert all(s["outcome"] == "ok" and s["exit_code"] == 0 for s in named["steps"] if s["kind"] == "service")
    assert {s["host"] for s in named["steps"] if s["node"] == "orders"} == {"app1", "app2"}

    rc, out, _ = run(capsys, "show", "-C", str(demo))
    assert rc == 0
    assert "release v2.4: failed" in out and "previous release: v2.3" in out
    row = next(line for line in out.splitlines() if re.match(r"apply\s+orders\s+app2\s", line))
    assert row.split()[3:6] == ["deploy", "failed", "3"]
    # The stderr tail, with the escape sequence shown, not sent to the terminal.
    assert "stderr: warming up" in out and "stderr: \\x1b[31morders broke on app2" in out
    assert "\x1b" not in out


def test_show_an_unknown_release_is_invalid_input(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "show", "-C", str(demo))
    assert rc == 2 and "no release" in err
    commands.apply(demo, "v2.3")
    rc, _, err = run(capsys, "show", "v9.9", "-C", str(demo))
    assert rc == 2 and "unknown release 'v9.9'" in err


def test_show_after_a_revert(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    commands.apply(demo, "v2.3")
    commands.apply(demo, "v2.4")
    commands.revert(demo)
    rec = run_json(capsys, "show", "-C", str(demo))
    assert rec["state"] == "reverted" and ISO.match(rec["reverted_at"])
    assert rec["finished_at"] <= rec["reverted_at"]
    reverts = [s for s in rec["steps"] if s["phase"] == "revert" and s["node"] == "web"]
    assert [(s["host"], s["action"], s["outcome"], s["from"], s["to"]) for s in reverts] == [
        ("edge1", "revert", "ok", "v2.4", "v2.3")]


# -- history -----------------------------------------------------------------------------------


def git(root: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com")
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_history_records_who_ran_it_from_which_commit(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    git(demo, "init", "-q")
    git(demo, "add", "-A")
    git(demo, "commit", "-q", "-m", "the demo")
    head = git(demo, "rev-parse", "HEAD")
    commands.apply(demo, "v2.3")
    # An uncommitted change to a manifest: the next release says its checkout was dirty.
    write(demo, {"services.d/web.yaml": (demo / "services.d/web.yaml").read_text() + "# changed\n"})
    commands.apply(demo, "v2.4")

    rows = run_json(capsys, "history", "-C", str(demo))
    assert [r["release"] for r in rows] == ["v2.4", "v2.3"]
    for r in rows:
        assert r["commit"] == head and r["state"] == "applied"
        assert ISO.match(r["started_at"]) and ISO.match(r["finished_at"]) and r["started_at"] <= r["finished_at"]
        assert isinstance(r["duration"], float) and r["duration"] >= 0
        assert re.fullmatch(r".+@.+", r["run_by"])
    assert [r["dirty"] for r in rows] == [True, False]

    rc, out, _ = run(capsys, "history", "-C", str(demo))
    header, *lines = out.splitlines()
    assert rc == 0 and header.split() == ["RELEASE", "STATE", "STARTED", "DURATION", "RUN", "BY", "COMMIT"]
    assert lines[0].startswith("v2.4") and f"{head[:12]} (dirty)" in lines[0]
    assert lines[1].startswith("v2.3") and lines[1].endswith(head[:12])


def test_history_outside_git_has_no_commit(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "history", "-C", str(demo))[1] == "no releases yet\n"
    commands.apply(demo, "v2.3")
    (row,) = run_json(capsys, "history", "-C", str(demo))
    assert row["commit"] is None and row["dirty"] is None and row["release"] == "v2.3"


# -- revert --dry-run and the revert prompt ------------------------------------------------------

def snapshot(root: Path) -> dict[str, object]:
    """Everything under .release (journal, host directories, databases, logs), byte for byte."""
    out: dict[str, object] = {}
    for p in sorted((root / ".release").rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def test_revert_dry_run_prints_the_plan_and_changes_nothing(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "revert", "--dry-run", "-C", str(demo))
    assert rc == 2 and "nothing to revert" in err and not (demo / ".release").exists()
    commands.apply(demo, "v2.3")
    add_notes_revision(demo)
    commands.apply(demo, "v2.4")
    before = snapshot(demo)

    plan = run_json(capsys, "revert", "--dry-run", "-C", str(demo))
    rc, out, _ = run(capsys, "revert", "--dry-run", "-C", str(demo))
    assert rc == 0
    assert snapshot(demo) == before  # no lock, no journal write, no host, no database touched

    assert plan["release"] == "v2.4" and plan["state"] == "applied"
    # Dependents first: every node is undone in a wave before the nodes it depends on.
    wave = {node: i for i, nodes in enumerate(plan["waves"]) for node in nodes}
    assert set(wave) == {*SERVICES, "orders-db"}  # accounts-db did not change in v2.4
    for dependency, dependent in build_graph(load_project(demo)).edges:
        if dependency in wave and dependent in wave:
            assert wave[dependent] < wave[dependency], (dependent, dependency)
    services = [s for s in plan["steps"] if s["kind"] == "service"]
    assert sorted((s["node"], s["host"]) for s in services) == sorted(
        (n, h) for n, hosts in SERVICES.items() for h in hosts)
    assert {(s["remove"], s["restore"]) for s in services} == {("v2.4", "v2.3")}
    assert [(s["node"], s["from"], s["restore"]) for s in plan["steps"] if s["kind"] == "database"] == [
        ("orders-db", "o4_notes", "o3_status")]

    assert "revert of release v2.4 (applied" in out and "Dry run: nothing was changed." in out
    assert "  orders on app2: v2.4 -> v2.3" in out and "  orders-db: downgrade o4_notes -> o3_status" in out
    assert out.index("  web on edge1") < out.index("  orders on app1") < out.index("  orders-db: ")

    # The revert does what the dry run said.
    commands.revert(demo)
    done = run_json(capsys, "show", "-C", str(demo))["steps"]
    assert sorted((s["node"], s["host"]) for s in done if s["phase"] == "revert" and s["kind"] == "service") == \
        sorted((s["node"], s["host"]) for s in services)
    rc, out, _ = run(capsys, "revert", "--dry-run", "-C", str(demo))
    assert rc == 0 and out == "release v2.4 is already reverted\n"


class Terminal:
    def isatty(self) -> bool:
        return True


def test_revert_names_the_release_it_undoes_before_asking(demo: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    commands.apply(demo, "v2.3")
    started = commands.history(demo)[0]["started_at"]
    asked: list[str] = []
    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr(typer, "confirm", lambda question, default=False: asked.append(question) or False)
    rc, out, _ = run(capsys, "revert", "-C", str(demo))
    when = datetime.fromisoformat(started.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M")
    assert rc == 1 and asked == [f"Revert release v2.3 (applied {when})?"]
    assert "wave 1:" in out and "  web on edge1: v2.3 -> nothing" in out
    assert commands.status(demo)["state"] == "applied"  # declined: nothing reverted


# -- the CLI's surface ---------------------------------------------------------------------------


@pytest.mark.e2e
def test_version(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "--version") == (0, f"release {version('release-orchestrator')}\n", "")
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "--version"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == f"release {version('release-orchestrator')}\n"


@pytest.mark.parametrize("command", [[], ["plan"], ["apply"], ["revert"], ["history"], ["show"], ["schema"]])
def test_help_shows_flags_without_a_type(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    rc, out, _ = run(capsys, *command, "--help")
    assert rc == 0 and "<bool>" not in out
    flags = {"--json", "--yes", "--version", "--install-completion"} if not command else {"--help"}
    for flag in flags:
        (line,) = [line for line in out.splitlines() if re.match(rf"\s+(-\w, )?{flag}\b", line)]
        assert re.match(rf"\s+(-\w, )?{flag}\s{{2,}}[A-Z]", line), line  # the flag, then its help


@pytest.mark.e2e
def test_shell_completion(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    env = dict(os.environ, _RELEASE_COMPLETE="complete_bash", COMP_WORDS="release sh", COMP_CWORD="1")
    proc = subprocess.run([sys.executable, "-m", "orchestrator"], env=env, capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.stdout.split() == ["show"]


def test_invalid_input_is_also_a_json_error_document(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(demo, {"services.d/web.yaml": "hosts: [nowhere]\ndeploy: 'true'\n"})
    problem = "services.d/web.yaml: hosts: unknown host or group 'nowhere'"
    for args, code in [(["validate"], 2), (["plan", "v2.3"], 2), (["plan", "v2.3", "--detailed-exitcode"], 1)]:
        rc, out, err = run(capsys, *args, "--json", "-C", str(demo))
        assert rc == code, args
        assert json.loads(out) == {"error": {"message": "invalid manifests", "problems": [problem],
                                             "exit_code": code}}
        assert err.startswith("error: invalid manifests\n") and problem in err
    rc, out, err = run(capsys, "plan", "v1;rm", "--json", "-C", str(demo))
    error = json.loads(out)["error"]
    assert rc == 2 and error["exit_code"] == 2 and error["message"].startswith("release name 'v1;rm'")
    rc, out, err = run(capsys, "plan", "--json", "-C", str(demo))  # a missing argument
    assert rc == 2 and json.loads(out)["error"]["message"] == "Missing argument 'name'."
    # Without --json, stdout stays empty.
    assert run(capsys, "validate", "-C", str(demo))[:2] == (2, "")


# -- release schema and docs/manifests.md ----------------------------------------------------------


def unknown_keys(schema: dict, data: object, defs: dict, where: str = "") -> list[str]:
    """The keys of `data` that `schema` has no place for. Of scalar types nothing is checked; a
    mapping or list where the schema wants the other is a mismatch, marked "!": an anyOf takes
    the alternative with the fewest mismatches, then the fewest unknown keys, as a validator would
    pick the one that matches."""
    while "$ref" in schema:
        schema = defs[schema["$ref"].removeprefix("#/$defs/")]
    if "anyOf" in schema:
        found = [unknown_keys(s, data, defs, where) for s in schema["anyOf"]]
        return min(found, key=lambda keys: (sum(k.startswith("!") for k in keys), len(keys)))
    wants = schema.get("type")
    if (wants == "object" and not isinstance(data, dict)) or (wants == "array" and not isinstance(data, list)):
        return [f"!{where}"]
    if isinstance(data, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
        out = []
        for key, value in data.items():
            if key in props:
                out += unknown_keys(props[key], value, defs, f"{where}{key}.")
            elif isinstance(extra, dict):
                out += unknown_keys(extra, value, defs, f"{where}{key}.")
            elif extra is False:
                out.append(f"{where}{key}")
        return out
    if isinstance(data, list) and isinstance(schema.get("items"), dict):
        return [k for item in data for k in unknown_keys(schema["items"], item, defs, where)]
    return []


def test_schema_is_the_models_as_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.manifest_schema import models, transport_models
    from orchestrator.settings import Hooks, Webhook

    rc, out, _ = run(capsys, "schema")
    doc = json.loads(out)
    defs = doc["$defs"]
    assert rc == 0 and doc["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert doc["anyOf"] == [{"$ref": f"#/$defs/{k}"} for k in ("Service", "Database", "Inventory", "Settings")]
    assert all(ref.removeprefix("#/$defs/") in defs for ref in re.findall(r'"\$ref": "([^"]+)"', out))
    for name, model in [*models().items(), ("Webhook", Webhook), ("Hooks", Hooks)]:
        assert set(defs[name]["properties"]) == set(model.model_fields), name
        assert defs[name]["additionalProperties"] is False
    for transport, model in transport_models().items():
        host = defs[model.__name__]
        assert set(host["properties"]) == {"transport", *model.model_fields}
        assert host["properties"]["transport"]["const"] == transport
    assert defs["Service"]["required"] == ["deploy"]  # `name` defaults to the file's stem
    assert defs["SSHSettings"]["required"] == ["address"]

    for path in sorted((REPO / "services.d").glob("*.yaml")):
        assert unknown_keys(doc, yaml.safe_load(path.read_text()), defs) == [], path.name
    def kind(name: str) -> dict:
        return {"$ref": f"#/$defs/{name}"}

    assert unknown_keys(doc, {"deploy": "x", "helth": "y"}, defs) != []
    assert unknown_keys(kind("Service"), {"deploy": "x", "helth": "y"}, defs) == ["helth"]
    assert unknown_keys(kind("Inventory"), {"hosts": {"web1": {"address": "h", "prot": 22}}}, defs) == [
        "hosts.web1.prot"]
    assert unknown_keys(kind("Settings"), {"notify": [{"url": "u", "event": []}]}, defs) == ["notify.event"]

    rc, out, _ = run(capsys, "schema", "--kind", "inventory")
    assert json.loads(out)["anyOf"] == [{"$ref": "#/$defs/Inventory"}]
    rc, _, err = run(capsys, "schema", "--kind", "nodes")
    assert rc == 2 and "unknown schema kind 'nodes'" in err


@pytest.mark.e2e
def test_schema_has_the_settings_of_every_installed_transport(with_plugin: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "schema", "--kind", "inventory"], cwd=tmp_path,
                          env=dict(os.environ, **with_plugin), capture_output=True, text=True)
    defs = json.loads(proc.stdout)["$defs"]
    (subdir,) = [d for d in defs.values() if d.get("properties", {}).get("transport", {}).get("const") == "subdir"]
    assert "transport" in subdir["required"] and "path" in subdir["properties"]
    hosts = defs["Inventory"]["properties"]["hosts"]["additionalProperties"]["anyOf"]
    assert len(hosts) == 3


def test_the_manifests_doc_and_the_schema_agree(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.manifest_schema import transport_models

    text = (REPO / "docs" / "manifests.md").read_text()
    doc = json.loads(run(capsys, "schema")[1])
    defs = doc["$defs"]
    plugins = {m.__name__ for t, m in transport_models().items() if t not in ("local", "ssh")}
    # Every field of every model is documented ...
    missing = [f"{name}.{field}" for name, d in defs.items() if name not in plugins
               for field in d["properties"] if f"`{field}`" not in text]
    assert missing == []
    # ... and every field the examples use exists.
    examples = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(examples) >= 4
    for example in examples:
        assert unknown_keys(doc, yaml.safe_load(example), defs) == [], example
