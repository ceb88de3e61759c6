"""Hostile input stays input: manifests, release names, command output and revision scripts that
try to slip past validation, crash the tool, reach the terminal raw or run code during `validate`.

Each case names what a user sees: exit 2 and a problem naming the file (and field or line), or
the bytes that reach stdout and stderr.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import copy_demo, run, write
from orchestrator import commands
from orchestrator.cli import main
from orchestrator.errors import InputError

SMALL = {
    "services.d/hosts.yaml": "hosts:\n  app1: {transport: local}\ngroups:\n  backend: [app1]\n",
    "services.d/web.yaml": "hosts: [backend]\ndeploy: 'true'\n",
}
WEB = "services.d/web.yaml"
INV = "services.d/hosts.yaml"


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """One local host, one service: enough to reach every check, and valid as it is."""
    root = write(tmp_path / "repo", SMALL)
    commands.validate(root)
    return root


def refused(root: Path, *expected: str) -> str:
    """`validate` refuses with exit 2, every expected text among its problems; they are returned."""
    with pytest.raises(InputError) as info:
        commands.validate(root)
    assert info.value.exit_code == 2
    text = "\n".join(info.value.problems) or info.value.message
    for e in expected:
        assert e in text, text
    return text


# ----------------------------------------------------- 1. names, versions and commands

NAMES = {
    "version ending in a newline": ({WEB: 'hosts: [backend]\ndeploy: "true"\nversion: "1.0\\n"\n'},
                                    [f"{WEB}: version:", "does not match"]),
    "name ending in a newline": ({WEB: 'name: "web\\n"\nhosts: [backend]\ndeploy: "true"\n'},
                                 [f"{WEB}: name:", "does not match"]),
    "host name ending in a newline": ({INV: 'hosts:\n  "app1\\n": {transport: local}\n  app1: {transport: local}\n'
                                            "groups:\n  backend: [app1]\n"},
                                      [f"{INV}: hosts:", "does not match"]),
    "group name ending in a newline": ({INV: 'hosts:\n  app1: {transport: local}\ngroups:\n  "backend\\n": [app1]\n'
                                             "  backend: [app1]\n"},
                                       [f"{INV}: groups:", "does not match"]),
}
NUL_FIELDS = ["deploy", "revert", "health", "current"]


@pytest.mark.parametrize("case", sorted(NAMES))
def test_a_trailing_newline_is_not_part_of_a_name(small: Path, case: str) -> None:
    files, expected = NAMES[case]
    write(small, files)
    refused(small, *expected)


@pytest.mark.parametrize("command", ["apply", "plan"])
def test_a_release_name_ending_in_a_newline_is_refused(small: Path, command: str, capsys) -> None:
    assert main(["-C", str(small), command, "v1\n", "-y"]) == 2
    assert "does not match" in capsys.readouterr().err
    assert not (small / ".release").exists()  # refused before the journal or any host was touched


@pytest.mark.parametrize("field", NUL_FIELDS)
def test_a_nul_byte_in_a_command_is_refused(small: Path, field: str) -> None:
    text = 'hosts: [backend]\ndeploy: "true"\n' if field != "deploy" else "hosts: [backend]\n"
    write(small, {WEB: text + f'{field}: "echo a\\0b"\n'})
    refused(small, f"{WEB}: {field}: contains a NUL byte")


def test_a_nul_byte_in_a_host_setting_is_refused(small: Path) -> None:
    write(small, {INV: 'hosts:\n  app1: {transport: local, root: "srv\\0x"}\ngroups:\n  backend: [app1]\n'})
    refused(small, f"{INV}: hosts.app1.root: contains a NUL byte")


# ----------------------------------------------------- 2. what validation used to miss


def _nested(depth: int) -> str:
    return "hosts: [backend]\ndeploy: 'true'\ndepends_on: " + "[" * depth + "]" * depth + "\n"


FILES = {
    "not UTF-8": (lambda root: (root / WEB).write_bytes(b"hosts: [backend]\ndeploy: 'caf\xe9'\n"),
                  [f"{WEB}: (file): not UTF-8 text"]),
    "nested too deeply": (lambda root: write(root, {WEB: _nested(10000)}), [f"{WEB}: line 3:", "nested more than"]),
    "broken symlink": (lambda root: (root / "services.d/api.yaml").symlink_to("gone.yaml"),
                       ["services.d/api.yaml: (file): broken symlink"]),
    "symlink loop": (lambda root: (root / "services.d/api.yaml").symlink_to("api.yaml"),
                     ["services.d/api.yaml: (file): symlink loop"]),
    "directory": (lambda root: (root / "services.d/api.yaml").mkdir(),
                  ["services.d/api.yaml: (file): a directory, not a manifest"]),
    "duplicate key": (lambda root: write(root, {WEB: "hosts: [backend]\ndeploy: 'true'\ndeploy: 'rm -rf ~'\n"}),
                      [f"{WEB}: deploy: duplicate key on line 3 (first on line 2)"]),
    "duplicate nested key": (lambda root: write(root, {INV: "hosts:\n  app1: {transport: local}\n"
                                                            "  app1: {transport: ssh, address: 192.0.2.1}\n"
                                                            "groups:\n  backend: [app1]\n"}),
                             [f"{INV}: hosts.app1: duplicate key on line 3 (first on line 2)"]),
    "over 1 MB": (lambda root: write(root, {WEB: "hosts: [backend]\ndeploy: 'true'\n#" + "x" * (1 << 20) + "\n[\n"}),
                  [f"{WEB}: (file):", "larger than 1 MB"]),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_manifest_files_that_cannot_be_read_as_yaml_are_named(small: Path, case: str) -> None:
    make, expected = FILES[case]
    make(small)
    text = refused(small, *expected)
    assert "malformed YAML" not in text  # the 1 MB file is refused before it is parsed


NUMBERS = {  # field: value as written in YAML, in services.d/web.yaml unless the field has a "."
    "timeout": [".inf", "1e20", "true", "-.inf", "'inf'"],
    "health_retries": ["true", "100000000000000000000"],
    "health_interval": [".nan", "false", "1e400"],
    "soak": ["true", ".inf"],
    "max_parallel": ["true"],
    "canary": ["true"],
    "hosts.app1.port": ["true", "1e20"],
    "hosts.app1.connect_timeout": [".inf", "true"],
}


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in NUMBERS.items() for v in vs])
def test_numbers_are_finite_sensible_and_not_booleans(small: Path, field: str, value: str) -> None:
    if field.startswith("hosts."):
        write(small, {INV: f"hosts:\n  app1: {{address: 192.0.2.1, {field.rsplit('.', 1)[1]}: {value}}}\n"
                           "groups:\n  backend: [app1]\n"})
        refused(small, f"{INV}: {field}:")
    else:
        write(small, {WEB: f"hosts: [backend]\ndeploy: 'true'\n{field}: {value}\n"})
        refused(small, f"{WEB}: {field}:")


def test_the_database_timeout_is_a_number_too(small: Path) -> None:
    write(small, {"services.d/db.yaml": "kind: database\nurl: sqlite:///x.db\nmigrations: m\ntimeout: .inf\n"})
    refused(small, "services.d/db.yaml: timeout:")


def test_unreadable_manifest_exits_2_naming_the_file(small: Path) -> None:
    (small / WEB).write_bytes(b"hosts: [backend]\ndeploy: '\xff'\n")
    proc = run("validate", cwd=small)
    assert proc.returncode == 2, proc.stderr
    assert f"{WEB}: (file): not UTF-8" in proc.stderr and "internal error" not in proc.stderr


# ----------------------------------------------------- 3. what commands print reaches the terminal escaped

FAILING = 'printf "\\033[31mRED\\033]0;title\\007" >&2; exit 1'
FORGED = "printf 'ok\\n12:00:00 info    release.applied\\n'"


@pytest.mark.parametrize("live_view", [False, True], ids=["lines", "live view"])
def test_control_characters_in_command_output_are_escaped(small: Path, live_view: bool, capsys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("orchestrator.view.wanted", lambda fmt: live_view)
    write(small, {WEB: f"hosts: [backend]\ndeploy: '{FAILING}'\n"})
    assert main(["-C", str(small), "apply", "v1", "-y"]) == 1
    out, err = capsys.readouterr()
    for byte in ("\x1b", "\x07"):
        assert byte not in out and byte not in err, (out, err)
    assert "\\x1b[31mRED" in err  # still shown, as text
    assert ("release v1: apply" in err) == live_view  # the view's table was drawn, or not


def test_json_output_keeps_command_output_exactly(small: Path, capsys) -> None:
    write(small, {WEB: f"hosts: [backend]\ndeploy: '{FAILING}'\n"})
    assert main(["-C", str(small), "apply", "v1", "--json"]) == 1
    out, err = capsys.readouterr()
    assert "\x1b" not in out and "\x1b" not in err
    (step,) = json.loads(out)["steps"]
    assert "\x1b[31mRED\x1b]0;title\x07" in step["detail"]


def test_command_output_cannot_forge_a_log_line(small: Path, capsys) -> None:
    write(small, {WEB: f'hosts: [backend]\ndeploy: "{FORGED}"\n'})
    assert main(["-C", str(small), "-v", "apply", "v1", "-y"]) == 0
    err = capsys.readouterr().err
    assert "deploy.output" in err and "release.applied" in err, err
    assert not any(line.startswith("12:00:00") for line in err.splitlines()), err
    # The run's JSONL log keeps exactly what the command printed.
    (logfile,) = (small / ".release" / "logs").glob("v1-*.jsonl")
    events = [json.loads(line) for line in logfile.read_text().splitlines()]
    (output,) = [e for e in events if e["event"] == "deploy.output"]
    assert output["stdout"] == "ok\n12:00:00 info    release.applied"


def test_a_probe_cannot_reach_the_terminal_through_the_plan(small: Path, capsys) -> None:
    write(small, {WEB: "hosts: [backend]\ndeploy: 'true'\ncurrent: printf 'v0\\033[2J\\n'\n",
                  ".release/hosts/app1/.keep": ""})
    assert main(["-C", str(small), "plan", "v1"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "v0\\x1b[2J -> v1" in out, out


def test_the_live_view_escapes_what_it_draws(capsys) -> None:
    import networkx as nx

    from orchestrator.view import LiveView

    g = nx.DiGraph()
    g.add_node("orders-db", kind="database")
    with LiveView(g, {"orders-db"}, False, "release v1: apply") as view:
        view.handle({"event": "migrate.start", "node": "orders-db", "revision": "r1\x1b[2J[bold]"})
        view.print("failed: \x1b]0;title\x07")
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err, err
    assert "r1\\x1b[2J[bold]" in err


# ----------------------------------------------------- 4. validate reads revision scripts, never runs them

REVISION = ("import pathlib\npathlib.Path({mark!r}).write_text('ran')\n\n"
            "revision = {rev}\ndown_revision = {down}\nbranch_labels = None\ndepends_on = None\n\n\n"
            "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n")
DB = "services.d/orders-db.yaml"
SCRIPTS = {  # (revision, down_revision, target), what validate says
    "a valid revision": (("'o4_notes'", "'o3_status'", None), None),
    "an unknown down_revision": (("'o4_notes'", "'zz_gone'", None), [f"{DB}: migrations:", "'zz_gone'"]),
    "a duplicate revision id": (("'o3_status'", "'o2_items'", None), [f"{DB}: migrations:", "'o3_status'",
                                                                     "more than once"]),
    "several heads": (("'o4_notes'", "'o2_items'", None), [f"{DB}: migrations:", "multiple heads (o3_status, o4_notes)"]),
    "several heads with a target": (("'o4_notes'", "'o2_items'", "o4_notes"), None),
    "an unknown target": (("'o4_notes'", "'o3_status'", "zz99"), [f"{DB}: migrations:", "target: unknown revision 'zz99'"]),
    "a computed revision id": (("'o4' + '_notes'", "'o3_status'", None), [f"{DB}: migrations:", "o4_notes.py",
                                                                          "revision"]),
    "a merge of two parents": (("'o4_notes'", "('o3_status', 'o2_items')", None), None),
    "a cycle": (("'o4_notes'", "'o4_notes'", None), [f"{DB}: migrations:", "cycle"]),
}


@pytest.mark.parametrize("case", sorted(SCRIPTS))
def test_validate_checks_revision_scripts_without_running_them(tmp_path: Path, case: str) -> None:
    (rev, down, target), expected = SCRIPTS[case]
    root = copy_demo(tmp_path / "repo")
    mark = tmp_path / "ran"
    write(root, {"migrations/orders/versions/o4_notes.py": REVISION.format(mark=str(mark), rev=rev, down=down)})
    if target:
        with (root / DB).open("a") as fh:
            fh.write(f"target: {target}\n")
    if expected is None:
        commands.validate(root)
    else:
        refused(root, *expected)
    assert not mark.exists(), "validate ran a revision script's code"


def test_validate_reports_a_revision_that_does_not_parse(tmp_path: Path) -> None:
    root = copy_demo(tmp_path / "repo")
    write(root, {"migrations/orders/versions/o4_notes.py": "revision = 'o4_notes'\ndef upgrade(:\n"})
    refused(root, f"{DB}: migrations:", "cannot load the revisions", "o4_notes.py")


def test_plan_still_loads_revision_scripts(tmp_path: Path) -> None:
    """The commands that migrate import the scripts, and so see what only running them shows."""
    root = copy_demo(tmp_path / "repo")
    write(root, {"migrations/orders/versions/o4_notes.py": REVISION.format(
        mark=str(tmp_path / "ran"), rev="'o4_notes'", down="'o3_status'") + "raise RuntimeError('broken at import')\n"})
    commands.validate(root)
    proc = run("plan", "v1", cwd=root)
    assert proc.returncode == 2 and "broken at import" in proc.stderr, proc.stderr
    assert os.path.exists(tmp_path / "ran")
