"""SSHTransport against real sshd hosts (the `fleet` fixture)."""

from __future__ import annotations

import asyncio
import secrets
import time
from contextlib import asynccontextmanager

import asyncssh
import pytest

from orchestrator.errors import HostUnreachable
from orchestrator.transports.base import Command
from orchestrator.transports.ssh import SSHTransport

pytestmark = pytest.mark.ssh


@asynccontextmanager
async def transport(fleet, name, *, known_hosts=None, jump=None, **overrides):
    if known_hosts is not None:
        overrides["known_hosts"] = str(known_hosts)
    t = SSHTransport(name, fleet.host_spec(name, **overrides), jump=jump,
                     handshakes=asyncio.Semaphore(10))
    try:
        yield t
    finally:
        await t.close()


def host_key_fingerprint(fleet, name: str) -> str:
    h = fleet.host(name)
    port = h.port if h.port != 22 else None
    keys = asyncssh.read_known_hosts(str(fleet.known_hosts)).match(h.address, h.address, port)[0]
    return keys[0].get_fingerprint("sha256")


def unique() -> str:
    return secrets.token_hex(4)


async def test_env_values_arrive_verbatim(fleet):
    values = {
        "QUOTES": "it's \"double\" and 'single'",
        "SPACES": "  two  spaces  ",
        "DOLLAR": "$HOME ${PATH} $(id) $$",
        "BACKTICKS": "`touch pwned` `id`",
        "SEMICOLON": "a; touch pwned; b && c || d | e > f",
        "NEWLINE": "line1\nline2\n",
        "BACKSLASH": "a\\b\\\\c\\n",
        "GLOB": "* ? [a-z] ~",
        "EMPTY": "",
        "UNICODE": "héllo → 世界",
    }
    d = f"env-{unique()}"
    script = f"mkdir {d} && " + " && ".join(
        f'printf "%s" "${k}" > {d}/{k}' for k in values
    ) + ' && printf "%s|" "$QUOTES" "$DOLLAR" "$SEMICOLON"'
    async with transport(fleet, "host1") as t:
        result = await t.run(Command(script, env=values, timeout=10))
    assert result.ok, result.describe()
    assert result.stdout == f"{values['QUOTES']}|{values['DOLLAR']}|{values['SEMICOLON']}|"
    home = fleet.host("host1").home
    for k, v in values.items():
        assert (home / d / k).read_bytes() == v.encode(), k
    assert not (home / "pwned").exists()


async def test_commands_keep_default_signal_handling(fleet):
    """The wrapper must not leave INT or QUIT ignored: a deploy's own traps, and the daemons it
    starts, must be stoppable as on a local host."""
    async with transport(fleet, "host1") as t:
        r = await t.run(Command("grep SigIgn /proc/self/status", timeout=10))
        assert r.ok, r.describe()
        mask = int(r.stdout.split()[1], 16)
        assert mask & 0x6 == 0, r.stdout  # bit 1: SIGINT, bit 2: SIGQUIT
        r = await t.run(Command("trap 'echo handled; exit 0' INT; kill -INT $$; sleep 5; echo missed",
                                timeout=10))
        assert r.stdout.strip() == "handled"


async def test_exit_status_stdout_stderr(fleet):
    async with transport(fleet, "host1") as t:
        r = await t.run(Command("echo out; echo err >&2; exit 3", timeout=10))
        assert (r.exit_code, r.stdout, r.stderr, r.error) == (3, "out\n", "err\n", None)
        assert not r.timed_out
        big = await t.run(Command("head -c 100000 /dev/zero | tr '\\0' x; echo END", timeout=10))
        assert big.ok and big.stdout.endswith("xxxEND\n") and len(big.stdout) <= 4000
        # The script itself reaches sh -c verbatim, quotes and all.
        r = await t.run(Command("""printf '%s\\n' "it's" '$HOME' "a  b" """, timeout=10))
        assert r.stdout == "it's\n$HOME\na  b\n"


async def test_runs_in_home_and_hosts_are_separate(fleet):
    name = f"mark-{unique()}"
    async with transport(fleet, "host1") as t1, transport(fleet, "host2") as t2:
        r = await t1.run(Command(f"pwd; echo one > {name}", timeout=10))
        assert r.ok, r.describe()
        assert r.stdout.strip() == f"/home/{fleet.user}"
        assert (fleet.host("host1").home / name).read_text() == "one\n"
        assert not (fleet.host("host2").home / name).exists()
        r2 = await t2.run(Command(f"pwd; test -e {name}", timeout=10))
        assert r2.stdout.strip() == f"/home/{fleet.user}" and r2.exit_code == 1


async def test_connect_is_reused_and_close_is_idempotent(fleet):
    async with transport(fleet, "host2") as t:
        await t.connect()
        conn = t.connection
        await t.connect()
        assert t.connection is conn
        assert (await t.run(Command("true", timeout=10))).ok
        assert t.connection is conn
        await t.close()
        await t.close()


async def test_timeout_kills_the_remote_process_tree(fleet):
    n = str(secrets.randbelow(10**6)).zfill(6)
    # A background child, a grandchild in a subshell, and a foreground sleep: all must die.
    script = f"sleep 31{n} & (sleep 32{n} &) ; echo started; sleep 33{n}"
    async with transport(fleet, "host3") as t:
        started = time.monotonic()
        r = await t.run(Command(script, timeout=2))
        elapsed = time.monotonic() - started
        assert r.timed_out and r.exit_code is None and not r.ok
        assert r.stdout == "started\n"
        assert 2 <= elapsed < 8, elapsed  # wide: a loaded CI machine is slow, a hang is forever
        # "[s]leep" keeps pgrep from matching the shell that runs it.
        check = await t.run(Command(f"pgrep -af '[s]leep 3[123]{n}'", timeout=10))
        assert check.exit_code == 1, f"still running: {check.stdout}"
        assert (await t.run(Command("echo alive", timeout=10))).stdout == "alive\n"


async def test_kill_running_stops_remote_commands(fleet):
    n = str(secrets.randbelow(10**6)).zfill(6)
    async with transport(fleet, "host3") as t:
        tasks = [asyncio.create_task(t.run(Command(f"sleep 34{n} & sleep 35{n}", timeout=60)))
                 for _ in range(3)]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        t.kill_running()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert time.monotonic() - started < 5
        assert all(not r.ok and r.error for r in results)
        check = await t.run(Command(f"pgrep -af '[s]leep 3[45]{n}'", timeout=10))
        assert check.exit_code == 1, f"still running: {check.stdout}"


async def test_cancelled_command_is_killed_remotely(fleet):
    n = str(secrets.randbelow(10**6)).zfill(6)
    async with transport(fleet, "host3") as t:
        task = asyncio.create_task(t.run(Command(f"sleep 36{n} & sleep 37{n}", timeout=60)))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # close() waited for the kill that the cancellation started.
    async with transport(fleet, "host3") as t:
        check = await t.run(Command(f"pgrep -af '[s]leep 3[67]{n}'", timeout=10))
        assert check.exit_code == 1, f"still running: {check.stdout}"


async def test_fifty_concurrent_commands_on_one_host(fleet):
    d = f"conc-{unique()}"
    # Each command counts the commands running with it; the server allows 10 sessions.
    script = (f"mkdir -p {d}/run; touch {d}/run/$N; ls {d}/run | wc -l >> {d}/counts.$N; "
              f"sleep 0.2; rm {d}/run/$N; echo $N")
    async with transport(fleet, "host4") as t:
        started = time.monotonic()
        results = await asyncio.gather(
            *(t.run(Command(script, env={"N": str(i)}, timeout=30)) for i in range(50))
        )
        elapsed = time.monotonic() - started
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(50)], [
        r.describe() for r in results if not r.ok
    ]
    home = fleet.host("host4").home / d
    peak = max(int(p.read_text().split()[0]) for p in home.glob("counts.*"))
    assert 1 < peak <= 8, peak
    print(f"50 commands of 0.2 s on one host: {elapsed:.2f} s, peak {peak} at once")


async def test_unknown_host_key_is_refused(fleet, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    h = fleet.host("host5")
    name = f"never-{unique()}"
    async with transport(fleet, "host5", known_hosts=empty) as t:
        with pytest.raises(HostUnreachable) as info:
            await t.connect()
        msg = str(info.value)
        assert "host5" in msg and h.address in msg
        assert host_key_fingerprint(fleet, "host5") in msg and "unknown host key" in msg
        r = await t.run(Command(f"touch {name}", timeout=10))
        assert not r.ok and r.error and "host5" in r.error
    assert not (h.home / name).exists()


def known_hosts_with_other_key(fleet, name: str, tmp_path, key_type: str):
    """A known_hosts file that pins another key (of `key_type`) to the host's address."""
    h = fleet.host(name)
    other = asyncssh.generate_private_key(key_type).export_public_key().decode()
    where = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
    path = tmp_path / "known_hosts"
    path.write_text(f"{where} {other}")
    return path


async def test_changed_host_key_is_refused(fleet, tmp_path):
    h = fleet.host("host5")
    changed = known_hosts_with_other_key(fleet, "host5", tmp_path, "ssh-ed25519")
    name = f"never-{unique()}"
    async with transport(fleet, "host5", known_hosts=changed) as t:
        with pytest.raises(HostUnreachable) as info:
            await t.connect()
        msg = str(info.value)
        assert "host5" in msg and h.address in msg and "CHANGED" in msg
        assert host_key_fingerprint(fleet, "host5") in msg
        r = await t.run(Command(f"touch {name}", timeout=10))
        assert not r.ok and "CHANGED" in r.error
    assert not (h.home / name).exists()


async def test_changed_host_key_of_another_type_names_the_offered_key(fleet, tmp_path):
    changed = known_hosts_with_other_key(fleet, "host5", tmp_path, "ecdsa-sha2-nistp256")
    async with transport(fleet, "host5", known_hosts=changed) as t:
        with pytest.raises(HostUnreachable) as info:
            await t.connect()
    assert "CHANGED" in str(info.value) and host_key_fingerprint(fleet, "host5") in str(info.value)


async def test_wrong_identity_is_refused(fleet, tmp_path):
    key = tmp_path / "id_other"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(key))
    async with transport(fleet, "host5", identity=str(key)) as t:
        with pytest.raises(HostUnreachable, match=r"host host5 \(.*\): authentication failed"):
            await t.connect()


async def test_jump_host(fleet):
    async with transport(fleet, "host1") as jump:
        async with transport(fleet, "host2", jump=jump) as t:
            r = await t.run(Command("hostname; pwd", timeout=10))
            assert r.ok, r.describe()
            if fleet.namespaced:
                assert r.stdout.split()[0] == "host2"


async def test_unreachable_host_fails_within_connect_timeout(fleet):
    fleet.cut("host6")
    try:
        async with transport(fleet, "host6", connect_timeout=2) as t:
            started = time.monotonic()
            with pytest.raises(HostUnreachable) as info:
                await t.connect()
            elapsed = time.monotonic() - started
        assert "host6" in str(info.value) and "connect_timeout" in str(info.value)
        assert 1.5 < elapsed < 6, elapsed  # the default connect_timeout would be 10 s
    finally:
        fleet.heal("host6")


async def test_command_dies_on_the_host_when_the_controller_goes_silent(fleet):
    """A network outage, not a crash: no end of file reaches the host, sshd notices nothing for
    minutes, and a deploy left running could finish behind a later revert. The host must kill it
    itself after `silence` seconds without a heartbeat, during the outage."""
    n = str(secrets.randbelow(10**6)).zfill(6)
    script = f"trap 'date +%s.%N > silenced.{n}; exit 1' TERM; sleep 38{n} & wait"
    async with transport(fleet, "host6", keepalive_interval=1, keepalive_count_max=2) as t:
        assert t.silence == 3
        await t.connect()
        task = asyncio.create_task(t.run(Command(script, timeout=120)))
        await asyncio.sleep(0.5)
        fleet.cut("host6")
        cut_at = time.time()
        try:
            r = await asyncio.wait_for(task, 15)
            # Well past the silence bound, and then some: a loaded machine is slow.
            await asyncio.sleep(max(0.0, cut_at + 3 + 5 - time.time()))
        finally:
            fleet.heal("host6")
        healed_at = time.time()
        assert r.error and "connection lost" in r.error
        check = await t.run(Command(f"cat silenced.{n} 2>/dev/null || echo never; "
                                    f"pgrep -f '[s]leep 38{n}' >/dev/null && echo running || echo gone",
                                    timeout=10))
        killed_at, after = check.stdout.split()
        assert killed_at != "never" and after == "gone", check.stdout
        assert cut_at < float(killed_at) < healed_at, (cut_at, killed_at, healed_at)


async def test_host_cut_mid_command_is_detected_by_keepalives(fleet):
    async with transport(fleet, "host6", keepalive_interval=1, keepalive_count_max=3) as t:
        await t.connect()
        task = asyncio.create_task(t.run(Command("sleep 60", timeout=120)))
        await asyncio.sleep(0.5)
        fleet.cut("host6")
        try:
            started = time.monotonic()
            r = await asyncio.wait_for(task, 15)
            elapsed = time.monotonic() - started
        finally:
            fleet.heal("host6")
        assert r.exit_code is None and not r.timed_out
        assert r.error and "host6" in r.error and "connection lost" in r.error
        assert elapsed < 10, elapsed  # about interval x (count + 1), against the 120 s timeout
        # After heal, the same transport reconnects for its next command ...
        again = await t.run(Command("echo back", timeout=10))
        assert again.stdout == "back\n", again.describe()
    # ... and so does a new one.
    async with transport(fleet, "host6") as t2:
        await t2.connect()
        assert (await t2.run(Command("true", timeout=10))).ok


async def test_a_login_shell_that_is_sh_runs_later_commands_itself_and_they_still_die_on_timeout(fleet):
    # The fleet's user logs in with /bin/sh. The first command learns it; from then on the login
    # shell runs the wrapper itself instead of exec'ing another /bin/sh for it.
    argv0 = "tr '\\0' '\\n' < /proc/$PPID/cmdline | head -n 1"  # the wrapper's argv[0]
    n = str(secrets.randbelow(10**6)).zfill(6)
    async with transport(fleet, "host2") as t:
        first, second = (await t.run(Command(argv0))).stdout, (await t.run(Command(argv0))).stdout
        assert (first, second) == ("/bin/sh\n", "sh\n")  # exec'd by the login shell; sshd's own
        r = await t.run(Command(f"sleep 36{n} & echo started; sleep 37{n}", timeout=2))
        assert r.timed_out and r.stdout == "started\n"
        check = await t.run(Command(f"pgrep -af '[s]leep 3[67]{n}'", timeout=10))
        assert check.exit_code == 1, f"still running: {check.stdout}"
