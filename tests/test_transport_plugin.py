"""Transports are plugins: a third one, registered by a distribution of its own, runs a whole
release with no change to `release`; the pool connects, kills and closes any of them alike."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from helpers import cli, cli_json, write
from orchestrator.errors import HostUnreachable
from orchestrator.transports import Command, CommandResult, Transport, TransportPool, make_pool

pytestmark = pytest.mark.e2e  # release runs as a process of its own

PLUGIN = Path(__file__).parent / "plugins" / "release-subdir"

INVENTORY = """\
hosts:
  box1: {transport: subdir, path: boxes/one}
  box2: {transport: subdir, path: boxes/two}
groups:
  boxes: [box1, box2]
"""

WEB = """\
hosts: [boxes]
max_parallel: 2
deploy: 'echo "$RELEASE_ACTION $RELEASE_VERSION" >> history; printf %s "$RELEASE_VERSION" > current'
health: 'test -f current'
"""


@pytest.fixture(scope="module")
def with_plugin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a `release` with release-subdir installed: its module, and a dist-info
    directory declaring the entry points its pyproject.toml declares, on PYTHONPATH."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    site = tmp_path_factory.mktemp("site")
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items())
        for group, eps in project["entry-points"].items()))
    path = [str(site), str(PLUGIN), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


@pytest.fixture
def boxes(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write(root, {"services.d/hosts.yaml": INVENTORY, "services.d/web.yaml": WEB})
    for box in ("one", "two"):
        (root / "boxes" / box).mkdir(parents=True)
    return root


@pytest.mark.slow
def test_a_release_on_a_plugin_transport(boxes: Path, with_plugin: dict[str, str]) -> None:
    env = with_plugin
    assert "1 services, 0 databases, 2 hosts" in cli("validate", cwd=boxes, env=env, check=0).stdout
    steps = cli_json("plan", "v1", cwd=boxes, env=env)["steps"]
    assert [(s["node"], s["to"], s["hosts"]) for s in steps] == [("web", "v1", ["box1", "box2"])]

    cli("apply", "v1", "-y", cwd=boxes, env=env, check=0)
    for box in ("one", "two"):
        assert (boxes / "boxes" / box / "current").read_text() == "v1"
    status = cli_json("status", cwd=boxes, env=env)
    assert (status["release"], status["state"]) == ("v1", "applied")
    assert status["services"] == {"web": {"box1": "v1", "box2": "v1"}}

    cli("revert", "-y", cwd=boxes, env=env, check=0)
    for box in ("one", "two"):
        assert (boxes / "boxes" / box / "history").read_text() == "deploy v1\nrevert \n"
        assert (boxes / "boxes" / box / "current").read_text() == ""
    assert cli_json("status", cwd=boxes, env=env)["state"] == "reverted"
    assert not (boxes / ".release" / "hosts").exists()  # nothing went through the local transport


@pytest.mark.slow
def test_the_plugin_validates_its_own_settings(boxes: Path, with_plugin: dict[str, str]) -> None:
    write(boxes, {"services.d/hosts.yaml": INVENTORY.replace("path: boxes/one", "paht: boxes/one")})
    proc = cli("apply", "v1", "-y", cwd=boxes, env=with_plugin)
    assert proc.returncode == 2, proc.stderr
    assert "services.d/hosts.yaml: hosts.box1.paht: unknown field" in proc.stderr
    assert "services.d/hosts.yaml: hosts.box1.path: required field is missing" in proc.stderr
    assert not (boxes / ".release" / "journal.db").exists()
    # Its cross-host check runs once every host's settings are valid.
    write(boxes, {"services.d/hosts.yaml": INVENTORY.replace("path: boxes/two", "path: ./boxes/one")})
    proc = cli("validate", cwd=boxes, env=with_plugin)
    assert proc.returncode == 2
    assert "services.d/hosts.yaml: hosts.box2.path: './boxes/one' is host box1's directory too" in proc.stderr


@pytest.mark.slow
def test_an_unreachable_plugin_host_refuses_the_run(boxes: Path, with_plugin: dict[str, str]) -> None:
    (boxes / "boxes" / "two").rmdir()
    proc = cli("apply", "v1", "-y", cwd=boxes, env=with_plugin)
    assert proc.returncode == 1, proc.stderr
    assert "cannot reach every host; nothing was changed" in proc.stderr
    assert "box2: host box2:" in proc.stderr and "is not a directory" in proc.stderr
    assert not (boxes / "boxes" / "one" / "current").exists()


def test_an_unknown_transport_names_the_host_and_the_known_ones(boxes: Path) -> None:
    proc = cli("validate", cwd=boxes)  # release-subdir is not installed here
    assert proc.returncode == 2
    assert ("services.d/hosts.yaml: hosts.box1.transport: unknown transport 'subdir' (known: local, ssh)"
            in proc.stderr)


def test_validating_ssh_hosts_does_not_import_asyncssh(tmp_path: Path) -> None:
    write(tmp_path, {"services.d/hosts.yaml": "hosts:\n  web1: {address: 198.18.0.11}\n"
                                              "  web2: {address: 198.18.0.12, jump: web1}\n",
                     "services.d/web.yaml": "hosts: [web2]\ndeploy: 'true'\n"})
    code = ("import sys; from orchestrator.manifests import load_project; "
            f"p = load_project({str(tmp_path)!r}); "
            "assert p.inventory.hosts['web2'].settings.jump == 'web1'; "
            "assert 'asyncssh' not in sys.modules, 'asyncssh was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- the pool ---------------------------------------------------------------------------------


class Recorder(Transport):
    """Records connect/close in one shared list; fails to connect when told to."""

    def __init__(self, name: str, events: list[str], *, behind: Transport | None = None,
                 unreachable: bool = False) -> None:
        self.name, self.events, self.behind, self.unreachable = name, events, behind, unreachable

    async def connect(self) -> None:
        if self.unreachable:
            raise HostUnreachable(f"host {self.name}: no route")
        self.events.append(f"connect {self.name}")

    async def run(self, command: Command) -> CommandResult:
        return CommandResult(0)

    async def close(self) -> None:
        await asyncio.sleep(0)
        self.events.append(f"close {self.name}")

    def kill_running(self) -> None:
        self.events.append(f"kill {self.name}")

    def dependencies(self) -> list[Transport]:
        return [self.behind] if self.behind else []


async def test_the_pool_closes_a_transport_before_what_it_depends_on() -> None:
    events: list[str] = []
    bastion = Recorder("bastion", events)
    inner = Recorder("inner", events, behind=bastion)
    deepest = Recorder("deepest", events, behind=inner)
    alone = Recorder("alone", events)
    async with TransportPool({"bastion": bastion, "inner": inner, "deepest": deepest, "alone": alone}) as pool:
        assert sorted(pool) == ["alone", "bastion", "deepest", "inner"] and len(pool) == 4
        assert pool["inner"] is inner and "bastion" in pool and "nope" not in pool
        pool.kill_running()
    closes = [e for e in events if e.startswith("close")]
    assert closes.index("close deepest") < closes.index("close inner") < closes.index("close bastion")
    assert sorted(e for e in events if e.startswith("kill")) == ["kill alone", "kill bastion", "kill deepest",
                                                                 "kill inner"]


async def test_preflight_names_every_unreachable_host() -> None:
    events: list[str] = []
    pool = TransportPool({"a": Recorder("a", events), "b": Recorder("b", events, unreachable=True),
                          "c": Recorder("c", events, unreachable=True)})
    with pytest.raises(HostUnreachable) as err:
        await pool.preflight()
    assert err.value.message == "cannot reach every host; nothing was changed"
    assert err.value.problems == ["b: host b: no route", "c: host c: no route"]
    assert events == ["connect a"]


async def test_make_pool_builds_what_the_hosts_depend_on(tmp_path: Path) -> None:
    from orchestrator.manifests import load_project
    from orchestrator.transports.local import LocalTransport

    write(tmp_path, {"services.d/hosts.yaml": "hosts:\n  app1: {transport: local, root: srv/app1}\n"
                                              "  bastion: {address: 198.18.0.10}\n"
                                              "  web1: {address: 198.18.0.11, jump: bastion}\n",
                     "services.d/web.yaml": "hosts: [web1, app1]\ndeploy: 'true'\n"})
    project = load_project(tmp_path)
    async with make_pool(project, ["web1", "app1"]) as pool:  # nothing connects until preflight
        assert sorted(pool) == ["app1", "bastion", "web1"]
        assert pool["web1"].dependencies() == [pool["bastion"]]
        app1 = pool["app1"]
        assert isinstance(app1, LocalTransport) and app1.root == (tmp_path / "srv" / "app1").resolve()
        assert app1.environment() == {"RELEASE_PROJECT_DIR": str(tmp_path.resolve())}
