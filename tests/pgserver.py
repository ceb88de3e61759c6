"""pytest plugin: a real, throw-away PostgreSQL server for the tests marked `postgres`.

`pg` (session): initdb into a fresh directory, `pg_ctl start` on 127.0.0.1 and a free port (plus a
unix socket in the same directory), trust authentication, durability switched off for speed;
stopped with `pg_ctl stop` on that data directory at the end. `pg_db` (function): a new, uniquely
named database on it, as a SQLAlchemy URL.

As root the server binaries refuse to run, so they run as the `postgres` OS user, which then has
to own the directory; the directory is made outside pytest's tmp tree because that one is 0700
root-only and the server could not reach its own data directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import closed_port

SUPERUSER = "postgres"


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin with the server programs, or $PG_BINDIR."""
    candidates = [os.environ["PG_BINDIR"]] if os.environ.get("PG_BINDIR") else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    for c in candidates:
        d = Path(c)
        if all((d / prog).is_file() for prog in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


@dataclass
class PgServer:
    bindir: Path
    base: Path  # owned by the server's OS user: data/, the socket and the log
    port: int = 0
    user: str | None = None  # OS user the binaries run as; None = ourselves
    _started: bool = field(default=False, repr=False)

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def logfile(self) -> Path:
        return self.base / "server.log"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        kwargs: dict = {}
        if self.user is not None:
            # Drops root's supplementary groups too, not just the uid.
            kwargs = {"user": self.user, "group": pwd.getpwnam(self.user).pw_gid, "extra_groups": []}
        return subprocess.run(
            list(args), capture_output=True, text=True, timeout=timeout, cwd=self.base,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"}, **kwargs,
        )

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no server log)"

    def init(self) -> None:
        res = self._run(
            str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER, "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")

    def start(self, attempts: int = 3) -> None:
        # The free port can be taken between probing and binding: try a few.
        for _ in range(attempts):
            self.port = closed_port()
            opts = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=50 -c shared_buffers=16MB"
            )
            res = self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                "-w", "-t", "30", "-o", opts, "start",
            )
            if res.returncode == 0:
                self._started = True
                return
        raise RuntimeError(
            f"pg_ctl start failed ({res.returncode}): {res.stderr.strip()}\n{self._log_tail()}"
        )

    def stop(self) -> None:
        if not self._started:
            return
        res = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate",
                        "-w", "-t", "20", "stop")
        if res.returncode != 0:
            # Only the postmaster this fixture started, found through its own pid file.
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
                os.kill(pid, signal.SIGKILL)
        self._started = False

    def connect(self, dbname: str = "postgres"):  # noqa: ANN201 - psycopg is imported lazily
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=SUPERUSER, dbname=dbname,
                               autocommit=True, connect_timeout=10)

    def create_database(self, name: str) -> str:
        """Create database `name` and return its URL."""
        from psycopg import sql

        with self.connect() as conn:
            stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if conn.info.server_version >= 150000:
                # A plain copy of template1's files: much faster than 15's default WAL_LOG.
                stmt = stmt + sql.SQL(" STRATEGY FILE_COPY")
            conn.execute(stmt)
        return self.url(name)


@pytest.fixture(scope="session")
def pg():
    """A running PostgreSQL server, for the whole test session."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (set PG_BINDIR)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg (3) is not installed")

    user: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` OS user to run the server as")
        user = "postgres"

    base = Path(tempfile.mkdtemp(prefix="release-pg-"))
    if user is not None:
        ent = pwd.getpwnam(user)
        os.chown(base, ent.pw_uid, ent.pw_gid)
    server = PgServer(bindir=bindir, base=base, user=user)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_db(pg: PgServer) -> str:
    """A fresh, empty database on the session's server; its SQLAlchemy URL."""
    return pg.create_database(f"t_{uuid.uuid4().hex[:16]}")

