"""Helpers shared by the tests: demo copies, manifests written on the fly, the CLI as a process."""

from __future__ import annotations

import json
import sqlite3
import os
import shutil
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent


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


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120,
        check: int | None = None) -> subprocess.CompletedProcess:
    """`release ARGS` as a user runs it: a separate process, stdin not a terminal."""
    full_env = dict(os.environ, NO_COLOR="1")
    full_env.pop("RELEASE_FAULT", None)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}, wanted {check}\n{proc.stdout}\n{proc.stderr}"
    return proc


def cli_json(*args: str, cwd: Path, **kw) -> dict:
    proc = cli(*args, "--json", cwd=cwd, **kw)
    return json.loads(proc.stdout)


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
