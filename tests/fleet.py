"""A fleet of real OpenSSH servers on this machine, for tests that need SSH hosts.

Loaded as a pytest plugin (`pytest_plugins = ["fleet"]`). The session-scoped `fleet` fixture
starts N sshd (default 6, `RELEASE_TEST_FLEET_SIZE`), each in its own network namespace behind a
veth pair on a Linux bridge, so a host can be cut off like a dead machine (its root-side link goes
down and packets vanish), and in its own mount namespace, so each host has its own home directory.
Without network namespaces (or with `RELEASE_TEST_FLEET_MODE=loopback`) the sshd listen on
127.0.0.1 with different ports instead, and a cut host is a stopped process tree.

Every name starts with `rlt<pid in hex>` so that parallel runs don't clash; leftovers of dead runs
(same `rlt` prefix, owner process gone) are removed at start-up.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helpers import closed_port

PREFIX = "rlt"
USER = "deploy"
HOME = Path("/home") / USER
DEFAULT_SIZE = 6
START_DEADLINE = 15.0  # seconds for every sshd to accept TCP
GUARD_ROUTE = ["unreachable", "198.18.0.0/15", "metric", "4000"]

def _find_sshd() -> str | None:
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, parents first (so they can't respawn children)."""
    try:
        import psutil

        proc = psutil.Process(pid)
        return [pid] + [c.pid for c in proc.children(recursive=True)]
    except Exception:
        return [pid]


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _running(pid: int) -> bool:
    """Alive and not a zombie (our own sshd stays a zombie until we reap it)."""
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


def _kill_trees(roots: list[int], procs: list[subprocess.Popen], grace: float = 1.0) -> None:
    pids = [p for root in roots for p in _process_tree(root)]
    _signal_all(pids, signal.SIGCONT)  # a cut loopback host is stopped: let it see SIGTERM
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while True:
        for proc in procs:
            proc.poll()
        left = [p for p in pids if _running(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    _signal_all(left, signal.SIGKILL)
    for proc in procs:
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass


def _wait_tcp(address: str, port: int, deadline: float, proc: subprocess.Popen, log: Path) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"sshd for {address}:{port} exited with {proc.returncode}: "
                f"{log.read_text()[-2000:]}"
            )
        try:
            with socket.create_connection((address, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd at {address}:{port} did not accept TCP in time") from None
            time.sleep(0.02)


@dataclass
class FleetHost:
    name: str
    address: str
    port: int
    home: Path  # this host's home directory, as seen from this machine
    netns: str | None = None
    veth: str | None = None  # root-side end: setting it down cuts the host off
    mac: str | None = None
    pid: int | None = None  # the sshd this fixture started
    log: Path | None = None
    cut: bool = False


class Fleet:
    """N sshd hosts. Public: hosts, user, identity, known_hosts, cut/heal, hosts_yaml, host_spec."""

    def __init__(self, size: int = DEFAULT_SIZE, mode: str | None = None) -> None:
        self.size = size
        self.tag = f"{PREFIX}{os.getpid():x}"
        self.user = USER
        self.hosts: list[FleetHost] = []
        self.namespaced = False  # True: network namespaces + bridge; False: loopback ports
        self.isolated_homes = True  # False only when even mount namespaces were unavailable
        self._mode = mode or os.environ.get("RELEASE_TEST_FLEET_MODE", "netns")
        self._dir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        self._bridge: str | None = None
        self._bridge_mac: str | None = None
        self._subnet: int | None = None
        self._procs: list[subprocess.Popen] = []
        self.identity = self._dir / "client" / "id_ed25519"
        self.known_hosts = self._dir / "client" / "known_hosts"
        self.startup_seconds = 0.0

    # -- public -----------------------------------------------------------------------------

    def host(self, name: str) -> FleetHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no fleet host {name!r}; hosts are {[h.name for h in self.hosts]}")

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def cut(self, name: str) -> None:
        """Make the host silent, like a dead machine: no RST, no ICMP, packets just vanish."""
        h = self.host(name)
        if self.namespaced:
            _sh("ip", "link", "set", h.veth, "down")
        else:
            _signal_all(_process_tree(h.pid), signal.SIGSTOP)
        h.cut = True

    def heal(self, name: str) -> None:
        h = self.host(name)
        if self.namespaced:
            _sh("ip", "link", "set", h.veth, "up")
            # Link changes may have flushed the static entries; put them back so ARP stays out
            # of the picture.
            self._neighbours(h)
        else:
            _signal_all(_process_tree(h.pid), signal.SIGCONT)
        h.cut = False

    def heal_all(self) -> None:
        for h in self.hosts:
            if h.cut:
                self.heal(h.name)

    def host_entry(self, name: str, **overrides) -> dict:
        h = self.host(name)
        entry = {
            "address": h.address,
            "port": h.port,
            "user": self.user,
            "identity": str(self.identity),
            "known_hosts": str(self.known_hosts),
            "connect_timeout": 3,
        }
        entry.update(overrides)
        return entry

    def hosts_yaml(
        self,
        names: list[str] | None = None,
        *,
        groups: dict[str, list[str]] | None = None,
        extra_hosts: dict[str, dict] | None = None,
        **overrides,
    ) -> str:
        """Text of a services.d/hosts.yaml with these hosts as ssh hosts (SPEC §2).

        `overrides` apply to every fleet host entry (e.g. keepalive_interval=1);
        `extra_hosts` adds other entries as they are (e.g. {"app1": {"transport": "local"}}).
        """
        hosts = {n: self.host_entry(n, **overrides) for n in (names or self.names)}
        hosts.update(extra_hosts or {})
        doc: dict = {"hosts": hosts}
        if groups:
            doc["groups"] = groups
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)

    def host_spec(self, name: str, **overrides):
        from orchestrator.transports.ssh_plugin import SSHSettings

        return SSHSettings(**self.host_entry(name, **overrides))

    def clear_homes(self) -> None:
        """Empty every host's home directory (files of earlier tests)."""
        for h in self.hosts:
            for child in h.home.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)

    # -- start-up ---------------------------------------------------------------------------

    def start(self, sshd: str) -> None:
        t0 = time.monotonic()
        self._ensure_user()
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self._dir.chmod(0o755)  # sshd reads authorized_keys as the deploy user
        self._write_client_files()
        network_error: Exception | None = None
        # Two runs starting at once must not pick the same subnet or clean up each other.
        with open(Path(tempfile.gettempdir()) / f"{PREFIX}-fleet.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _cleanup_leftovers(self.tag, self._dir)
            if self._mode != "loopback":
                try:
                    self._setup_network()
                    self.namespaced = True
                except (subprocess.CalledProcessError, OSError) as exc:
                    network_error = exc
                    self._teardown_network()
        if network_error is not None:
            exc = network_error
            why = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else exc
            warnings.warn(
                f"fleet: network namespaces unavailable ({why}); falling back to sshd on "
                "127.0.0.1 with different ports (cut() then stops the host's processes)",
                stacklevel=2,
            )
            for h in self.hosts:
                shutil.rmtree(h.log.parent, ignore_errors=True)
                shutil.rmtree(h.home, ignore_errors=True)
            self.hosts = []
        if not self.namespaced:
            self._setup_loopback()
        self._write_known_hosts()
        deadline = time.monotonic() + START_DEADLINE
        for h in self.hosts:
            self._start_sshd(h, sshd)
        for h, proc in zip(self.hosts, self._procs):
            _wait_tcp(h.address, h.port, deadline, proc, h.log)
        self.startup_seconds = time.monotonic() - t0

    def _ensure_user(self) -> None:
        import pwd

        try:
            pwd.getpwnam(USER)
        except KeyError:
            # "*": no password can match, yet the account is not "locked" ("!"), which sshd
            # refuses with UsePAM no.
            _sh("useradd", "--no-create-home", "--home-dir", str(HOME), "--shell", "/bin/sh",
                "--password", "*", USER)
        else:
            shadow = _sh("getent", "shadow", USER, check=False).stdout.split(":")
            if len(shadow) > 1 and shadow[1].startswith("!"):
                _sh("usermod", "--password", "*", USER)
        HOME.mkdir(parents=True, exist_ok=True)  # the mount point for each host's own home
        pw = pwd.getpwnam(USER)
        self._uid, self._gid = pw.pw_uid, pw.pw_gid
        if pw.pw_dir != str(HOME):
            raise RuntimeError(f"user {USER} exists with home {pw.pw_dir}, expected {HOME}")

    def _write_client_files(self) -> None:
        import asyncssh

        client = self.identity.parent
        client.mkdir(mode=0o700)
        key = asyncssh.generate_private_key("ssh-ed25519", comment=f"{self.tag}-client")
        key.write_private_key(str(self.identity))
        self.identity.chmod(0o600)
        key.write_public_key(str(self.identity) + ".pub")
        auth = self._dir / "authorized_keys"
        auth.write_bytes(key.export_public_key())
        auth.chmod(0o644)

    def _new_host(self, i: int, address: str, port: int) -> FleetHost:
        name = f"host{i}"
        hdir = self._dir / name
        hdir.mkdir(mode=0o755)
        home = self._dir / "homes" / name
        home.mkdir(parents=True, mode=0o755)
        os.chown(home, self._uid, self._gid)
        (self._dir / "homes").chmod(0o755)
        return FleetHost(name=name, address=address, port=port, home=home, log=hdir / "sshd.log")

    def _free_subnet(self) -> int:
        """A /24 in 198.18.0.0/15 no route uses yet: 198.18.0.0/24 unless a parallel run has it."""
        routes = _sh("ip", "-4", "route", "show", "table", "all", check=False).stdout
        used = set()
        for m in re.finditer(r"^(?:\S+ )?198\.18\.(\d+)\.\d+(?:/(\d+))?", routes, re.M):
            if m.group(2) != "15":
                used.add(int(m.group(1)))
        for n in range(256):
            if n not in used:
                return n
        raise RuntimeError("no free /24 in 198.18.0.0/16 for the test fleet")

    def _setup_network(self) -> None:
        n = self._subnet = self._free_subnet()
        self._bridge = f"{self.tag}b"
        self._bridge_mac = f"02:72:6c:{n:02x}:00:01"
        _sh("ip", "route", "replace", *GUARD_ROUTE)
        # A fixed MAC: otherwise the bridge takes its lowest port's and changes it as ports
        # join, which flushes the permanent neighbour entries.
        _sh("ip", "link", "add", self._bridge, "address", self._bridge_mac, "type", "bridge")
        _sh("ip", "addr", "add", f"198.18.{n}.1/24", "dev", self._bridge)
        _sh("ip", "link", "set", self._bridge, "up")
        for i in range(1, self.size + 1):
            h = self._new_host(i, f"198.18.{n}.{10 + i}", 22)
            h.netns, h.veth = f"{self.tag}-h{i}", f"{self.tag}v{i}"
            h.mac = f"02:72:6c:{n:02x}:01:{i:02x}"
            self.hosts.append(h)
            _sh("ip", "netns", "add", h.netns)
            _sh("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0",
                "address", h.mac, "netns", h.netns)
            _sh("ip", "link", "set", h.veth, "master", self._bridge, "up")
            _sh("ip", "-n", h.netns, "addr", "add", f"{h.address}/24", "dev", "eth0")
            _sh("ip", "-n", h.netns, "link", "set", "eth0", "up")
            _sh("ip", "-n", h.netns, "link", "set", "lo", "up")
            self._neighbours(h)

    def _neighbours(self, h: FleetHost) -> None:
        # Static entries both ways: a cut host then looks dead (silence), not "no ARP reply".
        _sh("ip", "neigh", "replace", h.address, "lladdr", h.mac, "dev", self._bridge,
            "nud", "permanent")
        _sh("ip", "-n", h.netns, "neigh", "replace", f"198.18.{self._subnet}.1", "lladdr",
            self._bridge_mac, "dev", "eth0", "nud", "permanent")

    def _setup_loopback(self) -> None:
        for i in range(1, self.size + 1):
            self.hosts.append(self._new_host(i, "127.0.0.1", closed_port()))

    def _write_known_hosts(self) -> None:
        import asyncssh

        lines = []
        for h in self.hosts:
            key = asyncssh.generate_private_key("ssh-ed25519", comment=f"{self.tag}-{h.name}")
            path = h.log.parent / "ssh_host_ed25519_key"
            key.write_private_key(str(path))
            path.chmod(0o600)
            pub = key.export_public_key().decode().split()
            where = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
            lines.append(f"{where} {pub[0]} {pub[1]}\n")
        self.known_hosts.write_text("".join(lines))

    def _sshd_config(self, h: FleetHost) -> Path:
        hdir = h.log.parent
        listen = "0.0.0.0:22" if self.namespaced else f"127.0.0.1:{h.port}"
        text = f"""\
ListenAddress {listen}
HostKey {hdir / 'ssh_host_ed25519_key'}
PidFile none
AuthorizedKeysFile {self._dir / 'authorized_keys'}
AllowUsers {USER}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin no
X11Forwarding no
PrintMotd no
UseDNS no
LogLevel ERROR
MaxSessions 10
MaxStartups 10
"""
        path = hdir / "sshd_config"
        path.write_text(text)
        return path

    def _start_sshd(self, h: FleetHost, sshd: str) -> None:
        config = self._sshd_config(h)
        # `mount --bind` gives this host its own home; the hostname helps when reading logs.
        inner = 'mount --bind "$1" "$2" && hostname "$3" && exec "$4" -D -e -f "$5"'
        args = ["sh", "-c", inner, "sh", str(h.home), str(HOME), h.name, sshd, str(config)]
        ns = ["unshare", "--mount", "--uts", "--propagation", "private"]
        if self.namespaced:
            cmd = ["ip", "netns", "exec", h.netns, *ns, *args]
        elif self.isolated_homes and _sh(*ns, "true", check=False).returncode == 0:
            cmd = [*ns, *args]
        else:
            self.isolated_homes = False
            h.home = HOME
            cmd = [sshd, "-D", "-e", "-f", str(config)]
        log = open(h.log, "wb")
        # Every layer execs the next, so this PID is the sshd's; its own session keeps the
        # terminal's Ctrl-C away from it.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
        log.close()
        h.pid = proc.pid
        self._procs.append(proc)

    # -- tear-down --------------------------------------------------------------------------

    def stop(self) -> None:
        _kill_trees([h.pid for h in self.hosts if h.pid], self._procs)
        self._teardown_network()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _teardown_network(self) -> None:
        for h in self.hosts:
            if h.veth:
                _sh("ip", "link", "del", h.veth, check=False)
            if h.netns:
                _sh("ip", "netns", "del", h.netns, check=False)
        if self._bridge:
            _sh("ip", "link", "del", self._bridge, check=False)
        if not _other_live_bridges(self.tag):
            _sh("ip", "route", "del", *GUARD_ROUTE, check=False)
        self._bridge = None


_LEFTOVER_PATTERNS = {
    "netns": re.compile(rf"^{PREFIX}([0-9a-f]+)-h\d+$"),
    "link": re.compile(rf"^{PREFIX}([0-9a-f]+)(?:b|v\d+)$"),
    "dir": re.compile(rf"^{PREFIX}([0-9a-f]+)-[a-z0-9_]{{8}}$"),
}


def _owner_gone(kind: str, name: str, own_tag: str) -> bool:
    """Whether `name` is ours-by-pattern and the run that made it is gone. Our own tag counts as
    gone: at start-up we have not created anything yet, so it is from an earlier run."""
    m = _LEFTOVER_PATTERNS[kind].match(name)
    if not m:
        return False
    return f"{PREFIX}{m.group(1)}" == own_tag or not _pid_alive(int(m.group(1), 16))


def _link_names() -> list[str]:
    out = _sh("ip", "-o", "link", "show", check=False).stdout
    return re.findall(r"^\d+: ([^:@\s]+)", out, re.M)


def _other_live_bridges(own_tag: str) -> bool:
    for name in _link_names():
        m = re.match(rf"^({PREFIX}[0-9a-f]+)b$", name)
        if m and m.group(1) != own_tag and not _owner_gone("link", name, own_tag):
            return True
    return False


def _cleanup_leftovers(own_tag: str, own_dir: Path) -> None:
    """Remove what earlier runs that are gone left behind: processes still running in their
    namespaces, links, namespaces, temp dirs."""
    netns = [n for n in _sh("ip", "netns", "list", check=False).stdout.split()
             if _owner_gone("netns", n, own_tag)]
    for ns in netns:
        pids = _sh("ip", "netns", "pids", ns, check=False).stdout.split()
        _signal_all([int(p) for p in pids], signal.SIGKILL)
    # Links first: a half-closed connection can keep a deleted namespace (and its veth) alive.
    for name in _link_names():
        if _owner_gone("link", name, own_tag):
            _sh("ip", "link", "del", name, check=False)
    for ns in netns:
        _sh("ip", "netns", "del", ns, check=False)
    for d in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        m = _LEFTOVER_PATTERNS["dir"].match(d.name)
        if m and d.is_dir() and d != own_dir and _owner_gone("dir", d.name, own_tag):
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def fleet():
    if not sys.platform.startswith("linux"):
        pytest.skip("the sshd test fleet needs Linux")
    sshd = _find_sshd()
    if not sshd:
        pytest.skip("the sshd test fleet needs OpenSSH's server: no sshd found "
                    "(apt-get install openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("the sshd test fleet needs root (a deploy user, namespaces, bind mounts)")
    size = int(os.environ.get("RELEASE_TEST_FLEET_SIZE", DEFAULT_SIZE))
    f = Fleet(size)
    try:
        f.start(sshd)
    except BaseException:
        f.stop()
        raise
    try:
        yield f
    finally:
        f.stop()
