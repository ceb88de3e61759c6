"""One SSH host's connection: opened on first use, shared by every command on that host, opened
again when it was lost.

Only the inventory decides how to connect (no ~/.ssh/config, keys only, its known_hosts file),
the run-wide `handshakes` semaphore (10, sshd's MaxStartups) is held only while connecting, and
every failure is explained with the host's name: a refused host key by its fingerprint.
"""

from __future__ import annotations

import asyncio
import os
import time

import asyncssh

from ..errors import HostUnreachable
from ..logs import get_logger
from .ssh_plugin import SSHSettings

CLOSE_TIMEOUT = 3.0

# Connection failures that leave the command with no exit status.
LOST = (asyncssh.Error, OSError, EOFError)


class Client(asyncssh.SSHClient):
    """Remembers what asyncssh does not report: the server key it refused, why the link died."""

    def __init__(self) -> None:
        self.offered_key: asyncssh.SSHKey | None = None
        self.lost: str | None = None

    def validate_host_public_key(self, host, addr, port, key) -> bool:
        # Only called for keys known_hosts does not trust: record it, still refuse it.
        self.offered_key = key
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = reason(exc) if exc else "connection closed"


def reason(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _fingerprint(key: asyncssh.SSHKey) -> str:
    return f"{key.get_fingerprint('sha256')} ({key.get_algorithm()})"


class SSHConnection:
    """The asyncssh connection to one inventory host, through its jump host's when it has one."""

    def __init__(
        self,
        name: str,
        spec: SSHSettings,
        *,
        jump: SSHConnection | None = None,
        handshakes: asyncio.Semaphore | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.jump = jump
        self._handshakes = handshakes
        self._connect_lock = asyncio.Lock()
        self.conn: asyncssh.SSHClientConnection | None = None
        self.client: Client | None = None
        self._failed: tuple[float, str] | None = None  # when the last connect failed, and why

    @property
    def where(self) -> str:
        return f"{self.spec.address}:{self.spec.port}"

    @property
    def connected(self) -> bool:
        return self.conn is not None and self.client is not None and self.client.lost is None

    @property
    def connection(self) -> asyncssh.SSHClientConnection | None:
        """The open connection (a jump host's is the tunnel of the hosts behind it)."""
        return self.conn if self.connected else None

    def _unreachable(self, why: str) -> HostUnreachable:
        return HostUnreachable(f"host {self.name} ({self.where}): {why}")

    async def connect(self) -> None:
        asked = time.monotonic()
        async with self._connect_lock:
            if self.connected:
                return
            failed = self._failed
            if failed is not None and failed[0] >= asked:
                # An attempt failed while this caller waited for it: share its answer, or the
                # commands queued on a lost host would each wait out connect_timeout in turn.
                raise HostUnreachable(failed[1])
            try:
                await self._connect()
            except HostUnreachable as exc:
                self._failed = (time.monotonic(), str(exc))
                raise

    async def _connect(self) -> None:
        """One attempt; the caller holds _connect_lock."""
        if self.conn is not None:
            self.conn.abort()  # lost: don't leave its transport behind
        self.conn = self.client = None
        tunnel = None
        if self.jump is not None:
            try:
                await self.jump.connect()
            except HostUnreachable as exc:
                raise self._unreachable(f"jump host unreachable: {exc}") from None
            tunnel = self.jump.connection
        known_hosts = os.path.expanduser(self.spec.known_hosts)
        if not os.path.isfile(known_hosts):
            # asyncssh would fall back to no trusted keys or ~/.ssh/known_hosts: never
            # silently verify against something else than what the inventory names.
            raise self._unreachable(
                f"known_hosts file {known_hosts} does not exist, so the host key cannot be "
                "verified"
            )
        t0 = time.monotonic()
        if self._handshakes is not None:
            async with self._handshakes:
                conn, client = await self._handshake(tunnel, known_hosts)
        else:
            conn, client = await self._handshake(tunnel, known_hosts)
        self.conn, self.client = conn, client
        get_logger(host=self.name).debug("ssh.connected", address=self.where,
                                         via=self.jump.name if self.jump else None,
                                         seconds=round(time.monotonic() - t0, 3))

    async def _handshake(self, tunnel, known_hosts: str, host_key_algs=()):
        spec = self.spec
        client = Client()
        options = dict(
            port=spec.port,
            tunnel=tunnel,
            known_hosts=known_hosts,
            connect_timeout=spec.connect_timeout,
            keepalive_interval=spec.keepalive_interval,
            keepalive_count_max=spec.keepalive_count_max,
            # Only the inventory decides: ~/.ssh/config would make CI and laptops differ.
            config=[],
            password_auth=False,
            kbdint_auth=False,
            gss_auth=False,
            gss_kex=False,
            client_factory=lambda: client,
        )
        if host_key_algs:
            options["server_host_key_algs"] = host_key_algs
        if spec.user:
            options["username"] = spec.user
        if spec.identity:
            # Agent keys are still offered alongside (asyncssh's agent_identities default).
            options["client_keys"] = [os.path.expanduser(spec.identity)]
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(spec.address, **options), spec.connect_timeout + 2
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise self._host_key_error(client, known_hosts, exc) from None
        except (asyncssh.KeyExchangeFailed, asyncssh.ConnectionLost, ConnectionResetError) as exc:
            failed = self._unreachable(f"connection failed during the handshake: {reason(exc)}")
            if not host_key_algs and self._trusted_keys(known_hosts):
                # When known_hosts names only other key types than the server has, one side
                # gives up on the key exchange. Negotiating any type learns the key the server
                # offers, which is still checked against known_hosts: a refusal then names it.
                try:
                    return await self._handshake(tunnel, known_hosts, host_key_algs="default")
                except HostUnreachable as again:
                    if "SHA256:" in str(again):
                        raise again from None
            raise failed from None
        except asyncssh.PermissionDenied as exc:
            who = spec.user or "the local user name"
            keys = f"key {spec.identity}" if spec.identity else "the agent's and default keys"
            raise self._unreachable(
                f"authentication failed for user {who} with {keys}: {reason(exc)}"
            ) from None
        except asyncio.TimeoutError:
            raise self._unreachable(
                f"no answer within connect_timeout {spec.connect_timeout:g}s"
            ) from None
        except ConnectionRefusedError:
            raise self._unreachable("connection refused (is sshd running on that port?)") from None
        except asyncssh.KeyImportError as exc:
            raise self._unreachable(f"identity {spec.identity}: {reason(exc)}") from None
        except FileNotFoundError as exc:
            what = "identity file" if spec.identity else "file"
            raise self._unreachable(f"{what} {exc.filename or exc} does not exist") from None
        except (asyncssh.Error, OSError, ValueError) as exc:
            raise self._unreachable(reason(exc)) from None
        return conn, client

    def _trusted_keys(self, known_hosts: str) -> list:
        try:
            port = self.spec.port if self.spec.port != 22 else None  # as asyncssh matches
            return list(asyncssh.read_known_hosts(known_hosts).match(
                self.spec.address, self.spec.address, port
            )[0])
        except (OSError, ValueError):
            return []

    def _host_key_error(self, client: Client, known_hosts: str, exc) -> HostUnreachable:
        key = client.offered_key
        if key is None:
            return self._unreachable(f"host key not verifiable: {reason(exc)}")
        trusted = self._trusted_keys(known_hosts)
        if trusted:
            return self._unreachable(
                f"HOST KEY CHANGED: the server offered {_fingerprint(key)}, but {known_hosts} "
                f"has a different key for {self.spec.address} "
                f"({', '.join(_fingerprint(k) for k in trusted)}); someone may be intercepting "
                "the connection, or the host was reinstalled. Refusing to connect; fix "
                "known_hosts after checking the key"
            )
        return self._unreachable(
            f"unknown host key {_fingerprint(key)}: {known_hosts} has no key for "
            f"{self.spec.address}. Refusing to connect; add the key after checking it "
            "(e.g. ssh-keyscan, compared with the host's own ssh-keygen -lf)"
        )

    async def close(self) -> None:
        conn, self.conn, self.client = self.conn, None, None
        if conn is None:
            return
        conn.close()
        try:
            await asyncio.wait_for(conn.wait_closed(), CLOSE_TIMEOUT)
        except (asyncio.TimeoutError, *LOST):
            pass
