"""Helpers shared by the tests: demo copies, manifests written on the fly, `release` run in this
process (`run`) or as a process of its own (`cli`, `spawn`), and reading the state back."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import sqlite3
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Iterator, TypeVar

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent

# The embedded demo: each service with the hosts it runs on, and the heads of its databases.
BACKEND = ["app1", "app2"]
SERVICES = {"accounts": BACKEND, "catalog": BACKEND, "inventory": BACKEND, "orders": BACKEND,
            "payments": ["app2"], "notifications": ["app1"], "web": ["edge1"]}
HOST_SERVICES = [(s, h) for s, hosts in SERVICES.items() for h in hosts]
HOSTS = ("app1", "app2", "edge1")


T = TypeVar("T")


@dataclass
class Baselines(Generic[T]):
    """The crash tests' shared starting points, copied for each case: `v23` has v2.3 applied and
    o4_notes added to the scripts (so v2.4 migrates orders-db too), `v24` the same with v2.4
    applied; `s23` and `s24` are what is in place in each."""
    v23: T
    v24: T
    s23: dict[str, Any]
    s24: dict[str, Any]


def copy_demo(dest: Path) -> Path:
    """A fresh copy of the embedded demo (services.d + migrations), with no .release state."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in ("services.d", "migrations"):
        shutil.copytree(REPO / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


# -- running release ---------------------------------------------------------------------------
#
# `run` is `release ARGS` in this process: no interpreter start-up, so most tests use it. `cli` and
# `spawn` start a process of its own, as a user or CI does: for what only a process boundary shows
# (exit codes of the real entry point, signals, kills, two runs at once, a lock's holder PID). A
# test that calls `cli` or `spawn` carries the `e2e` marker; conftest.py fails it with a message
# saying so when it does not.

E2E_MARKER_MISSING = ("this test starts `release` as a process of its own: mark it @pytest.mark.e2e "
                      "(or use helpers.run, which runs it in this process)")
in_e2e_test = False  # set by conftest.py for each test: whether it carries the `e2e` marker


def _cli_env(env: dict[str, str] | None) -> dict[str, str]:
    full = dict(os.environ, NO_COLOR="1")
    full.pop("RELEASE_FAULT", None)
    full.update(env or {})
    return full


def _check(result: "Result | subprocess.CompletedProcess", check: int | None) -> None:
    if check is not None:
        assert result.returncode == check, \
            f"exit {result.returncode}, wanted {check}\n{result.stdout}\n{result.stderr}"


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120,
        check: int | None = None) -> subprocess.CompletedProcess:
    """`release ARGS` as a user runs it: a separate process, stdin not a terminal."""
    assert in_e2e_test, E2E_MARKER_MISSING
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=_cli_env(env),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    _check(proc, check)
    return proc


def cli_json(*args: str, cwd: Path, **kw) -> dict:
    proc = cli(*args, "--json", cwd=cwd, **kw)
    return json.loads(proc.stdout)


def spawn(root: Path, *args: str, env: dict[str, str] | None = None, stderr_file: Path | None = None,
          session: bool = False, prefix: tuple[str, ...] = (), **popen: object) -> subprocess.Popen:
    """`release ARGS` started in the background, stdin not a terminal, stdout and stderr text
    pipes unless `popen` says otherwise. With `stderr_file` stderr goes there and stdout nowhere;
    with `session` it gets a session of its own, as a terminal runs it: killpg reaches it and its
    commands, never pytest. `prefix` runs it under another command (`unshare ...`)."""
    assert in_e2e_test, E2E_MARKER_MISSING
    kw: dict = {"text": True, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    with contextlib.ExitStack() as stack:
        if stderr_file is not None:
            kw.update(text=False, stdout=subprocess.DEVNULL, stderr=stack.enter_context(stderr_file.open("w")))
        return subprocess.Popen([*prefix, sys.executable, "-m", "orchestrator", *args], cwd=root, env=_cli_env(env),
                                stdin=subprocess.DEVNULL, start_new_session=session, **kw)


@contextlib.contextmanager
def background(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """A `release` started with `spawn` that must not outlive the block: killed (and reaped) if
    it still runs when the block ends, whether the test passed or not."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def finish(proc: subprocess.Popen, timeout: float = 120, check: int | None = 0) -> tuple[str, str]:
    """Wait for a spawned `release` (stdout and stderr pipes) to end: its (stdout, stderr), its
    exit code checked as `cli` checks it."""
    out, err = proc.communicate(timeout=timeout)
    _check(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), check)
    return out, err


@dataclass
class Result:
    """What `run` returns: the fields of `cli`'s subprocess.CompletedProcess that tests read."""
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def _pipe() -> io.TextIOWrapper:
    """stdout or stderr of an in-process run: text over bytes (`graph --format png` writes bytes),
    not a terminal, like `cli`'s pipes."""
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="surrogateescape", newline="")


def _read(pipe: io.TextIOWrapper) -> str:
    pipe.flush()
    return pipe.buffer.getvalue().decode("utf-8", errors="replace")


@contextlib.contextmanager
def _process_state(cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """What `release` reads or changes of the process, set as `cli` sets it and put back after:
    the working directory, the environment, the standard streams, the secrets `release.yaml`
    registered, structlog's context variables and the run log it may leave open."""
    import structlog

    from orchestrator import logs, secrets

    saved_cwd, saved_env = os.getcwd(), dict(os.environ)
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_secrets = set(secrets._registered)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    structlog.contextvars.clear_contextvars()
    try:
        yield
    finally:
        logs.close_run_log()
        logs.attach_view(None)
        logs.configure()
        structlog.contextvars.clear_contextvars()
        secrets._registered.clear()
        secrets._registered.update(saved_secrets)
        secrets._cache = None
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, check: int | None = None) -> Result:
    """`release ARGS` in this process, with what `cli` gives a process: that working directory,
    NO_COLOR, no RELEASE_FAULT (a fault kills the process: `cli` only), the extra `env`, stdin
    not a terminal. The same result shape as `cli`: swap one for the other. One difference stays:
    the journal records this process's PID for the run, and this process outlives it; a record
    that must read `interrupted` once its run is gone is made with `cli`."""
    from orchestrator.cli import main

    full = _cli_env(env)
    assert "RELEASE_FAULT" not in full, "a fault kills the process it is injected in: use cli()"
    out, err = _pipe(), _pipe()
    with _process_state(Path(cwd), full):
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(), out, err
        rc = main(list(args))
    result = Result(list(args), rc, _read(out), _read(err))
    _check(result, check)
    return result


def run_json(*args: str, cwd: Path, **kw) -> dict:
    return json.loads(run(*args, "--json", cwd=cwd, **kw).stdout)


def closed_port() -> int:
    """A loopback port nothing listens on (once the socket is closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def current(root: Path, host: str, service: str) -> str | None:
    """The version a Capistrano-style `current` link points at on a local host, or None."""
    link = root / ".release" / "hosts" / host / "apps" / service / "current"
    if not link.exists():
        return None
    return (link / "VERSION").read_text().strip()


def revision(db_file: Path) -> str | None:
    if not db_file.exists():
        return None
    eng = sa.create_engine(f"sqlite:///{db_file}")
    try:
        with eng.connect() as c:
            if not sa.inspect(c).has_table("alembic_version"):
                return None
            return c.execute(sa.text("select version_num from alembic_version")).scalar()
    finally:
        eng.dispose()


def schema(db: Path) -> dict[str, list[str]]:
    """Every table of a SQLite file with its columns: a half-applied or twice-downgraded revision
    shows here."""
    if not db.exists():
        return {}
    eng = sa.create_engine(f"sqlite:///{db}")
    try:
        with eng.connect() as c:
            insp = sa.inspect(c)
            return {t: sorted(col["name"] for col in insp.get_columns(t)) for t in insp.get_table_names()}
    finally:
        eng.dispose()


def tables(db_file: Path) -> set[str]:
    return set(schema(db_file)) - {"alembic_version"}


def events(root: Path, host: str) -> list[tuple[float, str, str, str, str]]:
    """The demo commands' event log on a host: (time, start|end, action, service, version)."""
    path = root / ".release" / "hosts" / host / "events.log"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        ts, what, action, service, version = line.split()
        out.append((float(ts), what, action, service, version))
    return out


def clone(src: Path, dest: Path) -> Path:
    """A copy of a project directory with its .release state; `current` links stay links."""
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def slow_deploys(root: Path, seconds: dict[str, float]) -> None:
    """Make the demo's deploy of each named service sleep between its start and end lines in
    events.log, so that signals land while commands run; reverts stay quick."""
    for service, secs in seconds.items():
        path = root / "services.d" / f"{service}.yaml"
        lines = path.read_text().splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if " start $RELEASE_ACTION" in line)
        lines.insert(at + 1, f'  [ "$RELEASE_ACTION" != deploy ] || sleep {secs}\n')
        path.write_text("".join(lines))


def journal_rows(root: Path, sql: str, *args: object) -> list[tuple]:
    """Rows of the project's SQLite journal, read directly as a user with sqlite3 would."""
    con = sqlite3.connect(root / ".release" / "journal.db")
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def fail_orders_on(root: Path, host: str, version: str) -> None:
    """Make the demo's orders deploy fail (exit 3) on one host for one version."""
    path = root / "services.d" / "orders.yaml"
    text = path.read_text().replace(
        "  set -e\n",
        f'  set -e\n  if [ "$RELEASE_ACTION" = deploy ] && [ "$RELEASE_HOST" = {host} ] && '
        f'[ "$RELEASE_VERSION" = {version} ]; then echo "orders broke on {host}" >&2; exit 3; fi\n', 1)
    path.write_text(text.replace("max_parallel", "#"))


NOTES_REVISION = '''"""add notes

Revision ID: o4_notes
Revises: o3_status
"""
import time

import sqlalchemy as sa
from alembic import op

revision = "o4_notes"
down_revision = "o3_status"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("order_notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("text", sa.Text))
    time.sleep({pause})
{more}

def downgrade():
{less}    op.drop_table("order_notes")
'''


def add_notes_revision(root: Path, pause: float = 0.0, two_tables: bool = False) -> None:
    """o4_notes for the demo's orders-db; with `two_tables` it sleeps between two CREATE TABLEs, so
    that a kill inside it would leave half a revision behind if it were not one transaction."""
    more = '    op.create_table("order_tags", sa.Column("id", sa.Integer, primary_key=True))\n' if two_tables else ""
    less = '    op.drop_table("order_tags")\n' if two_tables else ""
    write(root, {"migrations/orders/versions/o4_notes.py": NOTES_REVISION.format(pause=pause, more=more, less=less)})


def v24_steps(root: Path, phase: str, where: str = "1") -> list[tuple]:
    """The journal's steps of the newest v2.4 record in one phase (node, host, revision, status)."""
    return journal_rows(root, "select node, host, revision, status from steps where phase=? and release_id="
                        "(select max(id) from releases where name='v2.4') and " + where, phase)


def wait_for(check, timeout: float = 30.0, what: str = "condition"):  # noqa: ANN001, ANN201
    """Poll `check` until it returns something true; fail the test after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
