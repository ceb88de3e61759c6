"""The journal's tables. Their history is versioned by the Alembic scripts in `journal_migrations/`;
this module is what the code reads and writes, and must match the newest revision there."""

from __future__ import annotations

import sqlalchemy as sa

md = sa.MetaData()
releases = sa.Table(
    "releases", md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128)), sa.Column("state", sa.String(16)),
    sa.Column("revert_state", sa.String(16)), sa.Column("previous", sa.String(128)),
    sa.Column("started_at", sa.Float), sa.Column("finished_at", sa.Float),
    sa.Column("hostname", sa.String(255)), sa.Column("pid", sa.Integer),
    sa.Column("proc_start", sa.Float), sa.Column("manifests", sa.Text), sa.Column("message", sa.Text),
    sa.Column("pid_ns", sa.BigInteger),
)
steps = sa.Table(
    "steps", md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("release_id", sa.Integer), sa.Column("phase", sa.String(8)),
    sa.Column("node", sa.String(128)), sa.Column("kind", sa.String(16)), sa.Column("host", sa.String(128)),
    sa.Column("action", sa.String(16)), sa.Column("revision", sa.String(64)),
    sa.Column("before", sa.String(128)), sa.Column("after", sa.String(128)),
    sa.Column("status", sa.String(16)), sa.Column("exit_code", sa.Integer),
    sa.Column("stdout", sa.Text), sa.Column("stderr", sa.Text), sa.Column("detail", sa.Text),
    sa.Column("started_at", sa.Float), sa.Column("ended_at", sa.Float),
)
archives = sa.Table(
    "archives", md,
    sa.Column("release_id", sa.Integer, primary_key=True), sa.Column("node", sa.String(128), primary_key=True),
    sa.Column("files", sa.Text),
)
current_versions = sa.Table(
    "current_versions", md,
    sa.Column("node", sa.String(128), primary_key=True), sa.Column("host", sa.String(128), primary_key=True),
    sa.Column("version", sa.String(128)), sa.Column("release_id", sa.Integer),
)
lock_table = sa.Table(
    "lock", md,
    sa.Column("id", sa.Integer, primary_key=True), sa.Column("lock_id", sa.String(64)),
    sa.Column("owner", sa.String(255)), sa.Column("hostname", sa.String(255)), sa.Column("pid", sa.Integer),
    sa.Column("proc_start", sa.Float), sa.Column("command", sa.String(255)),
    sa.Column("since", sa.Float), sa.Column("heartbeat", sa.Float),
    sa.Column("pid_ns", sa.BigInteger), sa.Column("run_id", sa.String(64)),
)
events = sa.Table(
    "events", md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True), sa.Column("ts", sa.Float),
    sa.Column("release_id", sa.Integer), sa.Column("event", sa.String(64)), sa.Column("detail", sa.Text),
)
