"""One journal shared by several projects (a team's PostgreSQL journal, RELEASE_JOURNAL): each
project's releases, lock and state stay its own; a command in one never touches another's.

Both projects have a service `app` on a local host `h1` (in their own directories), so that a
mix-up of names shows as a file written on the wrong project's host.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.config import Config

from helpers import background, finish, run, run_json, spawn, wait_for, write
from orchestrator.journal_schema import MIGRATIONS

APP = ("hosts: [h1]\n"
       "deploy: |\n"
       '  echo "$RELEASE_ACTION ${RELEASE_VERSION:-none}" >> actions.log\n'
       '  while [ "$RELEASE_ACTION" = deploy ] && [ -n "$GATE" ] && [ ! -e "$GATE" ]; do sleep 0.05; done\n'
       '  printf %s "$RELEASE_VERSION" > VERSION\n')


def project(root: Path, name: str | None = None) -> Path:
    files = {"services.d/hosts.yaml": "hosts:\n  h1: {transport: local}\n", "services.d/app.yaml": APP}
    if name:
        files["services.d/release.yaml"] = f"project: {name}\n"
    return write(root, files)


def host_file(root: Path, name: str) -> str:
    path = root / ".release" / "hosts" / "h1" / name
    return path.read_text() if path.exists() else ""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a journal both projects use through RELEASE_JOURNAL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'team' / 'journal.db'}"
    return request.getfixturevalue("pg_db")


def state(root: Path, journal: str) -> tuple:
    st = run_json("status", cwd=root, env={"RELEASE_JOURNAL": journal})
    hist = run_json("history", cwd=root, env={"RELEASE_JOURNAL": journal})
    return st["release"], st["state"], st["services"], [(h["release"], h["state"]) for h in hist]


@pytest.mark.slow
def test_revert_in_one_project_never_touches_another(shared: str, tmp_path: Path) -> None:
    a = project(tmp_path / "projA", name="shop")  # named in release.yaml
    b = project(tmp_path / "projB")  # named after its directory
    env = {"RELEASE_JOURNAL": shared}
    run("apply", "a1", "-y", cwd=a, env=env, check=0)
    run("apply", "b1", "-y", cwd=b, env=env, check=0)
    run("apply", "b2", "-y", cwd=b, env=env, check=0)
    run("apply", "a2", "-y", cwd=a, env=env, check=0)  # the newest release in the journal is A's
    a_log = host_file(a, "actions.log")
    a_state = state(a, shared)
    assert a_state == ("a2", "applied", {"app": {"h1": "a2"}}, [("a2", "applied"), ("a1", "applied")])

    proc = run("revert", "-y", cwd=b, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "release b2 reverted" in proc.stdout
    assert host_file(b, "VERSION") == "b1"
    assert host_file(b, "actions.log").splitlines()[-1] == "revert b1"
    # A's host never saw a command, and A's journal records are as they were.
    assert host_file(a, "VERSION") == "a2" and host_file(a, "actions.log") == a_log
    assert state(a, shared) == a_state
    assert state(b, shared) == ("b2", "reverted", {"app": {"h1": "b1"}}, [("b2", "reverted"), ("b1", "applied")])
    # A's revert is A's own: a2 goes, a1 comes back.
    run("revert", "-y", cwd=a, env=env, check=0)
    assert host_file(a, "VERSION") == "a1" and host_file(b, "VERSION") == "b1"


@pytest.mark.slow
@pytest.mark.e2e
def test_each_project_holds_its_own_lock(shared: str, tmp_path: Path) -> None:
    a, b = project(tmp_path / "alpha"), project(tmp_path / "beta")
    env = {"RELEASE_JOURNAL": shared}
    gate = tmp_path / "gate"  # alpha's deploy waits for it: alpha holds its lock until then
    with background(spawn(a, "apply", "v1", env={**env, "GATE": str(gate)})) as slow:
        wait_for(lambda: "deploy v1" in host_file(a, "actions.log"), what="alpha's deploy")
        # Alpha's lock keeps out a second run of alpha...
        second = run("apply", "v1", "-y", cwd=a, env=env)
        assert second.returncode == 3 and "held by" in second.stderr and "apply v1" in second.stderr
        # ...not beta, which applies and reverts meanwhile.
        run("apply", "v1", "-y", cwd=b, env=env, check=0)
        run("revert", "-y", cwd=b, env=env, check=0)
        assert slow.poll() is None
        gate.touch()
        finish(slow, timeout=60)
    assert host_file(a, "VERSION") == "v1" and host_file(b, "VERSION") == ""
    assert state(a, shared)[:3] == ("v1", "applied", {"app": {"h1": "v1"}})
    assert state(b, shared)[:3] == ("v1", "reverted", {})


@pytest.mark.slow
def test_a_journal_from_before_projects_belongs_to_the_first_project_that_opens_it(tmp_path: Path) -> None:
    """A journal written before projects were recorded (schema j0001): its records become those of
    the first project that opens it with this version; another project then sees none of them."""
    journal = tmp_path / "old.db"
    engine = sa.create_engine(f"sqlite:///{journal}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        alembic_command.upgrade(cfg, "j0001")
    engine.dispose()
    con = sqlite3.connect(journal)
    with con:
        con.execute("insert into releases (name, state, started_at, finished_at, manifests) "
                    "values ('v1', 'applied', 1, 2, '{}')")
        con.execute("insert into current_versions (node, host, version, release_id) values ('app', 'h1', 'v1', 1)")
    con.close()
    a, b = project(tmp_path / "old"), project(tmp_path / "new")
    env = {"RELEASE_JOURNAL": f"sqlite:///{journal}"}
    write(a, {".release/hosts/h1/VERSION": "v1"})
    assert state(a, env["RELEASE_JOURNAL"]) == ("v1", "applied", {"app": {"h1": "v1"}}, [("v1", "applied")])
    assert state(b, env["RELEASE_JOURNAL"]) == (None, None, {}, [])
    run("apply", "v2", "-y", cwd=a, env=env, check=0)
    run("revert", "-y", cwd=a, env=env, check=0)  # back to the release the old journal recorded
    assert host_file(a, "VERSION") == "v1"
    assert state(a, env["RELEASE_JOURNAL"])[:3] == ("v2", "reverted", {"app": {"h1": "v1"}})
