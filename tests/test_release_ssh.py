"""End to end through the CLI with SSH hosts: the embedded demo pointed at the `fleet` of real sshd
hosts by replacing only `services.d/hosts.yaml`; each host's files are checked in its own home."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
import time
from pathlib import Path

import asyncssh
import pytest
import yaml

from orchestrator.transports.base import Command
from orchestrator.transports.ssh import SSHTransport

from helpers import cli, cli_json, copy_demo, journal_rows, revision, slow_deploys, write

pytestmark = [pytest.mark.ssh, pytest.mark.e2e]

BACKEND_SERVICES = ("accounts", "catalog", "inventory", "orders")


# -- the demo on the fleet -------------------------------------------------------------------


class Demo:
    """A copy of the demo whose inventory names fleet hosts: app1.. (backend) and edge1.. (frontend)."""

    def __init__(self, root: Path, fleet) -> None:
        self.root = root
        self.fleet = fleet
        names = fleet.names
        if len(names) < 4:
            pytest.skip("these tests need a fleet of at least 4 hosts")
        edges = 2 if len(names) >= 6 else 1
        self.backend = [f"app{i + 1}" for i in range(len(names) - edges)]
        self.frontend = [f"edge{i + 1}" for i in range(edges)]
        self.fleet_name = dict(zip(self.backend + self.frontend, names))
        self.services = {s: list(self.backend) for s in BACKEND_SERVICES}
        self.services.update({"payments": ["app2"], "notifications": ["app1"], "web": list(self.frontend)})

    @property
    def hosts(self) -> list[str]:
        return self.backend + self.frontend

    def write_inventory(self, *, known_hosts: dict[str, str] | None = None, **overrides) -> None:
        """The only file of the demo that changes to run it on SSH hosts."""
        hosts = {}
        for name, fname in self.fleet_name.items():
            extra = dict(overrides)
            if known_hosts and name in known_hosts:
                extra["known_hosts"] = known_hosts[name]
            hosts[name] = self.fleet.host_entry(fname, **extra)
        doc = {"hosts": hosts, "groups": {"backend": self.backend, "frontend": self.frontend}}
        (self.root / "services.d" / "hosts.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    def home(self, host: str) -> Path:
        return self.fleet.host(self.fleet_name[host]).home

    def current(self, host: str, service: str) -> str | None:
        """The version `apps/<service>/current` points at on the host, checked link and file."""
        link = self.home(host) / "apps" / service / "current"
        if not link.is_symlink():
            return None
        target = os.readlink(link)
        version = (link / "VERSION").read_text().strip()
        assert target == f"releases/{version}", (host, service, target, version)
        return version

    def assert_all_at(self, version: str | None, services: dict[str, list[str]] | None = None) -> None:
        for svc, hosts in (services or self.services).items():
            for h in hosts:
                assert self.current(h, svc) == version, (svc, h)

    def events(self, host: str) -> list[tuple[float, str, str, str, str]]:
        """The demo commands' events.log in the host's home: (time, start|end, action, service, version)."""
        path = self.home(host) / "events.log"
        out = []
        for line in path.read_text().splitlines() if path.exists() else []:
            ts, what, action, service, version = line.split()
            out.append((float(ts), what, action, service, version))
        return out

    def cli(self, *args: str, **kw):
        return cli(*args, cwd=self.root, **kw)

    def cli_json(self, *args: str, **kw) -> dict:
        return cli_json(*args, cwd=self.root, **kw)


@pytest.fixture
def demo(tmp_path: Path, fleet) -> Demo:
    fleet.heal_all()
    fleet.clear_homes()
    d = Demo(copy_demo(tmp_path / "repo"), fleet)
    d.write_inventory()
    return d


def homes_empty(fleet) -> bool:
    return all(not any(h.home.iterdir()) for h in fleet.hosts)



def releases(root: Path) -> list[tuple[str, str, str | None]]:
    """(name, state, revert_state) of every release in the journal, oldest first."""
    return journal_rows(root, "select name, state, revert_state from releases order by id")


def intervals(demo: Demo, service: str, action: str = "deploy") -> list[tuple[float, float, str]]:
    """(start, end, host) of each run of `action` of `service`, from the hosts' own clocks."""
    out = []
    for h in demo.hosts:
        starts = [e[0] for e in demo.events(h) if e[1:4] == ("start", action, service)]
        ends = [e[0] for e in demo.events(h) if e[1:4] == ("end", action, service)]
        assert len(starts) == len(ends), (h, starts, ends)
        out += [(s, e, h) for s, e in zip(starts, ends)]
    return out


def peak_overlap(spans: list[tuple[float, float, str]]) -> int:
    points = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])
    peak = now = 0
    for _, d in points:  # at equal times an end (-1) sorts before a start
        now += d
        peak = max(peak, now)
    return peak


# -- apply, apply next, revert ----------------------------------------------------------------


def test_demo_on_ssh_hosts_apply_apply_revert(demo: Demo) -> None:
    # Only hosts.yaml differs from the embedded demo.
    repo = Path(__file__).resolve().parent.parent
    for f in (demo.root / "services.d").iterdir():
        if f.name != "hosts.yaml":
            assert f.read_text() == (repo / "services.d" / f.name).read_text(), f.name

    started = time.monotonic()
    out = demo.cli_json("apply", "v2.3", check=0)
    took = time.monotonic() - started
    assert out["state"] == "applied"
    assert sorted((s["node"], s["host"]) for s in out["steps"] if s["kind"] == "service") == sorted(
        (svc, h) for svc, hosts in demo.services.items() for h in hosts)
    demo.assert_all_at("v2.3")
    assert revision(demo.root / ".release" / "orders.db") == "o3_status"
    # Each host has only what its services put there.
    for h in demo.hosts:
        mine = sorted(s for s, hosts in demo.services.items() if h in hosts)
        assert sorted(p.name for p in (demo.home(h) / "apps").iterdir()) == mine, h

    demo.cli("apply", "v2.4", check=0)
    demo.assert_all_at("v2.4")
    # Capistrano-style: the old release stays on disk, `current` moved.
    assert (demo.home("app1") / "apps/orders/releases/v2.3/VERSION").read_text() == "v2.3\n"

    proc = demo.cli("revert", check=0)
    assert "reverted" in proc.stdout
    demo.assert_all_at("v2.3")
    st = demo.cli_json("status")
    assert st["release"] == "v2.4" and st["state"] == "reverted"
    assert st["services"] == {s: {h: "v2.3" for h in hosts} for s, hosts in demo.services.items()}
    # Reverted in reverse dependency order on the hosts' clocks: web before orders before accounts.
    ends = {s: max(e for _, e, _ in intervals(demo, s, "revert")) for s in ("web", "orders")}
    starts = {s: min(b for b, _, _ in intervals(demo, s, "revert")) for s in ("orders", "accounts")}
    assert ends["web"] <= starts["orders"] and ends["orders"] <= starts["accounts"]
    print(f"demo apply over SSH on {len(demo.hosts)} hosts: {took:.2f} s")


# -- rolling updates --------------------------------------------------------------------------


def test_rolling_updates_on_the_hosts_clocks(demo: Demo) -> None:
    # accounts: max_parallel 1; catalog: "50%" of the backend hosts.
    slow_deploys(demo.root, {"accounts": 0.3, "catalog": 0.4})
    demo.cli("apply", "v2.3", check=0)
    accounts = intervals(demo, "accounts")
    catalog = intervals(demo, "catalog")
    assert sorted(h for *_, h in accounts) == sorted(demo.backend)
    assert sorted(h for *_, h in catalog) == sorted(demo.backend)
    assert peak_overlap(accounts) == 1, accounts
    # One host at a time, in inventory order.
    assert [h for *_, h in sorted(accounts)] == demo.backend
    half = -(-len(demo.backend) // 2)
    assert peak_overlap(catalog) == half, catalog


# -- health gates -----------------------------------------------------------------------------


def test_health_failure_stops_the_rollout_and_revert_restores_changed_hosts(demo: Demo) -> None:
    demo.cli("apply", "v2.3", check=0)
    bad = demo.backend[1]
    orders = demo.root / "services.d" / "orders.yaml"
    text = orders.read_text()
    old_health = next(line for line in text.splitlines() if line.startswith("health:"))
    # Unhealthy on one host, for v2.4 only (so that the revert's health check passes there).
    orders.write_text(text.replace(old_health, old_health + (
        f' && {{ [ "$RELEASE_HOST" != {bad} ] || [ "$RELEASE_VERSION" != v2.4 ]; }}')))
    before = {h: len(demo.events(h)) for h in demo.hosts}

    proc = demo.cli("apply", "v2.4", "--json")
    assert proc.returncode == 1, proc.stderr
    assert f"health check failed on {bad}" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["state"] == "failed"
    steps = out["steps"]
    by = {(s["node"], s["host"]): s["outcome"] for s in steps}
    assert by[("orders", "app1")] == "ok" and by[("orders", bad)] == "failed"
    # The rollout stopped at the unhealthy host: the rest of the backend was not touched.
    untouched = demo.backend[2:]
    for h in untouched:
        assert demo.current(h, "orders") == "v2.3"
        assert not any(e[3] == "orders" for e in demo.events(h)[before[h]:]), h
    assert demo.current("app1", "orders") == "v2.4" and demo.current(bad, "orders") == "v2.4"
    # Dependents never started anywhere.
    assert demo.current("app1", "notifications") == "v2.3"
    for h in demo.hosts:
        assert not any(e[3] in ("notifications", "web") for e in demo.events(h)[before[h]:]), h

    mark = {h: len(demo.events(h)) for h in demo.hosts}
    demo.cli("revert", check=0)
    demo.assert_all_at("v2.3")
    # orders was reverted only where it had changed.
    reverted_orders = sorted(h for h in demo.hosts
                             if any(e[2:4] == ("revert", "orders") for e in demo.events(h)[mark[h]:]))
    assert reverted_orders == sorted(["app1", bad])
    # and nothing ran for the nodes that never started.
    for h in demo.hosts:
        assert not any(e[3] in ("notifications", "web") for e in demo.events(h)[mark[h]:]), h


# -- unreachable hosts ------------------------------------------------------------------------


def test_host_cut_off_before_the_release(demo: Demo) -> None:
    demo.write_inventory(connect_timeout=2)
    lost = demo.frontend[-1]
    demo.fleet.cut(demo.fleet_name[lost])
    try:
        started = time.monotonic()
        proc = demo.cli("apply", "v2.3")
        took = time.monotonic() - started
        assert proc.returncode == 1, proc.stderr
        assert f"host {lost}" in proc.stderr and "connect_timeout" in proc.stderr
        assert "nothing was changed" in proc.stderr
        # Refused within about the connect timeout (2 s) of the release's start.
        (refused,), = journal_rows(demo.root, "select finished_at - started_at from releases")
        assert refused < 2 + 1.5, refused
        assert took < 15, took
        assert homes_empty(demo.fleet)
        assert revision(demo.root / ".release" / "accounts.db") is None
        assert releases(demo.root) == [("v2.3", "failed", None)]
        assert journal_rows(demo.root, "select count(*) from steps") == [(0,)]
        demo.cli("revert", check=0)
        assert homes_empty(demo.fleet)
        assert journal_rows(demo.root, "select count(*) from steps") == [(0,)]
        assert revision(demo.root / ".release" / "accounts.db") is None
    finally:
        demo.fleet.heal_all()
    print(f"apply refused for a cut host {refused:.2f} s after the release began "
          f"(connect_timeout 2; CLI run {took:.2f} s)")


def test_host_cut_off_mid_release(demo: Demo) -> None:
    demo.write_inventory(connect_timeout=2, keepalive_interval=1, keepalive_count_max=3)
    demo.cli("apply", "v2.3", check=0)
    slow_deploys(demo.root, {"catalog": 3})
    lost = demo.backend[0]  # catalog ("50%") runs on the first half of the backend together
    partner = demo.backend[1]
    fhost = demo.fleet_name[lost]
    result: dict = {}

    def run() -> None:
        result["proc"] = demo.cli("apply", "v2.4", "--json")
        result["end"] = time.time()

    runner = threading.Thread(target=run)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not any(e[1:5] == ("start", "deploy", "catalog", "v2.4") for e in demo.events(lost)):
            assert time.monotonic() < deadline and runner.is_alive(), "catalog never started"
            time.sleep(0.05)
        demo.fleet.cut(fhost)
        cut_at = time.time()
        runner.join(60)
        assert not runner.is_alive()
        proc = result["proc"]
        assert proc.returncode == 1, proc.stderr
        assert json.loads(proc.stdout)["state"] == "failed"
        assert f"catalog on {lost}" in proc.stderr and "connection lost" in proc.stderr
        # When the journal recorded the lost host's step as failed, and when the run ended.
        (ended,), = journal_rows(demo.root, "select ended_at from steps where node='catalog' and "
                                 f"host='{lost}' and phase='apply' and status='failed'")
        detect, finish = ended - cut_at, result["end"] - cut_at
        # The command running on the other host at the same time finished.
        assert any(e[1:5] == ("end", "deploy", "catalog", "v2.4") for e in demo.events(partner))
        assert demo.current(partner, "catalog") == "v2.4"
        # Keepalives: 1 s x 3, not the command's 300 s timeout.
        assert detect < 10, detect
        assert finish < 15, finish

        # A revert that cannot reach a host it must touch refuses before changing anything.
        marks = {h: len(demo.events(h)) for h in demo.hosts if h != lost}
        started = time.monotonic()
        proc = demo.cli("revert")
        refused_in = time.monotonic() - started
        assert proc.returncode == 1, proc.stderr
        assert f"host {lost}" in proc.stderr and "nothing was changed" in proc.stderr
        for h, n in marks.items():
            assert len(demo.events(h)) == n, h
        assert demo.current(partner, "catalog") == "v2.4"
        assert refused_in < 15, refused_in
    finally:
        demo.fleet.heal(fhost)
        runner.join(60)

    demo.cli("revert", check=0)
    demo.assert_all_at("v2.3")
    assert releases(demo.root)[-1] == ("v2.4", "reverted", "done")
    print(f"cut host's step failed {detect:.2f} s after the cut (keepalive 1 s x 3), apply ended "
          f"after {finish:.2f} s; revert refused in {refused_in:.2f} s")


def test_commands_queued_on_a_lost_host_fail_together(tmp_path: Path, fleet) -> None:
    """More commands than the connection's 8 sessions on a host that goes silent: the queued ones
    share one reconnect attempt instead of each waiting out connect_timeout in turn."""
    fleet.heal_all()
    fleet.clear_homes()
    root = tmp_path / "queued"
    name = fleet.names[-1]
    home = fleet.host(name).home
    n = str(secrets.randbelow(10**6)).zfill(6)
    files = {"services.d/hosts.yaml": fleet.hosts_yaml([name], connect_timeout=2, keepalive_interval=1,
                                                       keepalive_count_max=3)}
    for i in range(16):
        files[f"services.d/s{i:02d}.yaml"] = f"hosts: [{name}]\ndeploy: 'touch run.$RELEASE_SERVICE; sleep 6{n}'\n"
    write(root, files)
    result: dict = {}

    def run() -> None:
        result["proc"] = cli("apply", "r1", "--parallelism", "16", cwd=root)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while len(list(home.glob("run.*"))) < 8:
            assert time.monotonic() < deadline and runner.is_alive(), "the commands never started"
            time.sleep(0.05)
        fleet.cut(name)
        cut_at = time.time()
        runner.join(60)
    finally:
        fleet.heal(name)
        runner.join(60)
        asyncio.run(run_on(fleet, name, f"pkill -f '[s]leep 6{n}'"))
    proc = result["proc"]
    assert proc.returncode == 1, proc.stderr
    assert len(list(home.glob("run.*"))) == 8  # the 8 that waited for a session never ran
    assert "connection lost" in proc.stderr and "connect_timeout" in proc.stderr
    # Keepalives (1 s x 3), then one reconnect attempt (2 s) for all 8 queued commands, not 8
    # attempts one after the other.
    (last,), = journal_rows(root, "select max(ended_at) from steps")
    finish = last - cut_at
    assert finish < 12, finish  # one attempt after another would take 3 + 8 x 2 = 19 s
    print(f"16 commands on a host cut mid-run: the last step failed {finish:.2f} s after the cut")


# -- host keys --------------------------------------------------------------------------------


def known_hosts_without(fleet, tmp_path: Path, fname: str, replacement: str | None) -> Path:
    h = fleet.host(fname)
    where = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
    lines = [line for line in fleet.known_hosts.read_text().splitlines() if line.split()[0] != where]
    assert len(lines) == len(fleet.hosts) - 1
    if replacement:
        lines.append(f"{where} {replacement}")
    path = tmp_path / f"known_hosts-{secrets.token_hex(3)}"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("case", ["unknown", "changed"])
def test_unknown_or_changed_host_key_is_refused(demo: Demo, tmp_path: Path, case: str) -> None:
    target = demo.backend[-1]
    fname = demo.fleet_name[target]
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    kh = known_hosts_without(demo.fleet, tmp_path, fname, other if case == "changed" else None)
    demo.write_inventory(known_hosts={h: str(kh) for h in demo.hosts})
    proc = demo.cli("apply", "v2.3")
    assert proc.returncode == 1, proc.stderr
    assert f"host {target}" in proc.stderr
    assert ("HOST KEY CHANGED" if case == "changed" else "unknown host key") in proc.stderr
    served = asyncssh.read_known_hosts(str(demo.fleet.known_hosts))
    h = demo.fleet.host(fname)
    key = served.match(h.address, h.address, h.port if h.port != 22 else None)[0][0]
    assert key.get_fingerprint("sha256") in proc.stderr
    assert homes_empty(demo.fleet)
    assert revision(demo.root / ".release" / "accounts.db") is None
    assert releases(demo.root) == [("v2.3", "failed", None)]
    assert journal_rows(demo.root, "select count(*) from steps") == [(0,)]


# -- timeouts ---------------------------------------------------------------------------------


def test_command_hanging_past_its_timeout_is_killed_on_the_host(demo: Demo) -> None:
    n = str(secrets.randbelow(10**6)).zfill(6)
    host = demo.backend[0]
    write(demo.root, {"services.d/catalog.yaml": (
        "hosts: [app1]\ntimeout: 2\n"
        f"deploy: 'echo $$ > hang.pid; sleep 9{n} & echo $! >> hang.pid; (sleep 8{n} &); wait'\n")})
    started = time.monotonic()
    proc = demo.cli("apply", "v2.3")
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert f"catalog on {host}" in proc.stderr and "timed out" in proc.stderr
    assert took < 15, took
    pids = [int(p) for p in (demo.home(host) / "hang.pid").read_text().split()]
    assert len(pids) == 2
    for pid in pids:  # the fleet's hosts share this machine's PID namespace
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert state == "Z" or n.encode() not in cmdline, f"{pid} still runs: {cmdline!r}"
    # Asked on the host itself, through a fresh connection and command.
    left = asyncio.run(run_on(demo.fleet, demo.fleet_name[host], f"pgrep -af '[s]leep [89]{n}'"))
    assert left.exit_code == 1, f"still running on {host}: {left.stdout}"


async def run_on(fleet, fname: str, script: str):
    t = SSHTransport(fname, fleet.host_spec(fname))
    try:
        return await t.run(Command(script, timeout=10))
    finally:
        await t.close()


# -- scale: stock sshd limits -----------------------------------------------------------------


def test_whole_fleet_at_once_and_many_services_on_one_host(tmp_path: Path, fleet) -> None:
    fleet.heal_all()
    fleet.clear_homes()
    root = tmp_path / "wide"
    names = fleet.names
    count = 32
    # Each command counts the commands running on its host beside it.
    body = ("mkdir -p run && touch run/$RELEASE_SERVICE && ls run | wc -l >> counts && "
            "echo \"$(date +%s.%N) $RELEASE_SERVICE start\" >> times && sleep {s} && "
            "echo \"$(date +%s.%N) $RELEASE_SERVICE end\" >> times && rm run/$RELEASE_SERVICE")
    files = {"services.d/hosts.yaml": fleet.hosts_yaml(names, groups={"all": names}),
             "services.d/wide.yaml": (f"hosts: [all]\nmax_parallel: '100%'\n"
                                      f"deploy: {json.dumps(body.format(s=0.6))}\n")}
    # After `wide`, so that they don't take its sessions on the first host.
    for i in range(count):
        files[f"services.d/s{i:02d}.yaml"] = (f"hosts: [{names[0]}]\ndepends_on: [wide]\n"
                                              f"deploy: {json.dumps(body.format(s=0.3))}\n")
    write(root, files)
    started = time.monotonic()
    out = cli_json("apply", "r1", "--parallelism", "50", cwd=root, check=0)
    took = time.monotonic() - started
    assert out["state"] == "applied"
    assert len(out["steps"]) == count + len(names)
    assert all(s["outcome"] == "ok" for s in out["steps"])
    # The wide service ran on every host at once.
    spans = []
    for h in fleet.hosts:
        t = {}
        for line in (h.home / "times").read_text().splitlines():
            ts, svc, what = line.split()
            if svc == "wide":
                t[what] = float(ts)
        spans.append((t["start"], t["end"], h.name))
    assert peak_overlap(spans) == len(names), spans
    # On the first host, at most 8 commands shared the connection, and they did share it.
    peak = max(int(c) for c in (fleet.hosts[0].home / "counts").read_text().split())
    assert 1 < peak <= 8, peak
    print(f"{count + 1} services on one host and 1 on {len(names)} hosts: {took:.2f} s, peak {peak}")


# -- jump hosts -------------------------------------------------------------------------------


def test_release_through_a_jump_host(tmp_path: Path, fleet) -> None:
    fleet.heal_all()
    fleet.clear_homes()
    root = tmp_path / "jump"
    bastion, *inner = fleet.names[:3]
    # in1 is behind in0, which is behind the bastion: a chain.
    hosts = fleet.hosts_yaml([bastion], extra_hosts={
        "in0": fleet.host_entry(inner[0], jump=bastion), "in1": fleet.host_entry(inner[1], jump="in0")})
    write(root, {"services.d/hosts.yaml": hosts,
                 "services.d/svc.yaml": "hosts: [in0, in1]\nmax_parallel: 2\n"
                                        "deploy: 'echo \"$RELEASE_HOST $RELEASE_VERSION $(hostname)\" > where'\n"})
    cli("apply", "r1", cwd=root, check=0)
    for i, name in enumerate(inner):
        got = (fleet.host(name).home / "where").read_text().split()
        assert got[:2] == [f"in{i}", "r1"]
        if fleet.namespaced:
            assert got[2] == name
    assert not (fleet.host(bastion).home / "where").exists()


async def test_hosts_behind_a_jump_host_are_closed_before_it(fleet) -> None:
    """A kill still under way on a host behind a jump host finishes before the tunnel closes."""
    from orchestrator.transports import TransportPool

    n = str(secrets.randbelow(10**6)).zfill(6)
    bastion, inner = fleet.names[:2]
    jump = SSHTransport(bastion, fleet.host_spec(bastion))
    behind = SSHTransport(inner, fleet.host_spec(inner), jump=jump)
    # TERM is ignored: the kill needs its grace period and then KILL, through the tunnel.
    task = asyncio.create_task(behind.run(Command(f"trap '' TERM; sleep 47{n}", timeout=60)))
    for _ in range(100):
        if behind._running and next(iter(behind._running)).pgid:
            break
        await asyncio.sleep(0.05)
    # The jump host first, as make_pool builds them: the pool must still close it last.
    async with TransportPool({bastion: jump, inner: behind}):
        behind.kill_running()
    result = await task
    assert not result.ok
    left = await run_on(fleet, inner, f"pgrep -af '[s]leep 47{n}'")
    assert left.exit_code == 1, f"still running behind the jump host: {left.stdout}"


# -- the command environment ------------------------------------------------------------------


def test_environment_reaches_remote_commands_exactly(tmp_path: Path, fleet) -> None:
    fleet.heal_all()
    fleet.clear_homes()
    root = tmp_path / "env"
    names = fleet.names[:2]
    log = "env | grep ^RELEASE_ | LC_ALL=C sort >> env.log; echo -- >> env.log"
    write(root, {"services.d/hosts.yaml": fleet.hosts_yaml(names),
                 "services.d/envcheck.yaml": (f"hosts: {json.dumps(names)}\nmax_parallel: 2\n"
                                              f"deploy: {json.dumps(log)}\nhealth: {json.dumps(log)}\n")})

    def runs(host: str) -> list[dict[str, str]]:
        text = (fleet.host(host).home / "env.log").read_text()
        return [dict(line.split("=", 1) for line in block.strip().splitlines())
                for block in text.split("--\n") if block.strip()]

    def expect(host, action, version, previous, release):
        return {"RELEASE_NAME": release, "RELEASE_SERVICE": "envcheck", "RELEASE_VERSION": version,
                "RELEASE_PREVIOUS_VERSION": previous, "RELEASE_HOST": host, "RELEASE_ACTION": action}

    first, second = "v1.0+build_7", "v1.1-rc.2"
    cli("apply", first, cwd=root, check=0)
    cli("apply", second, cwd=root, check=0)
    cli("revert", cwd=root, check=0)
    for h in names:
        assert runs(h) == [
            expect(h, "deploy", first, "", first), expect(h, "health", first, "", first),
            expect(h, "deploy", second, first, second), expect(h, "health", second, first, second),
            expect(h, "revert", first, second, second), expect(h, "health", first, second, second),
        ]
