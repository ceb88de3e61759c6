"""The same workload for Ansible and pyinfra, in their fastest honest configuration.

Neither can make one host's step wait for a step on another host and let everything else go on,
so both run the graph wave by wave (topological generations, a barrier between waves), and within
a wave each host runs its steps one after another (Ansible runs one task at a time per host and
`raw` has no `async`; a pyinfra operation runs its commands in order). `MAPPING` says so in the
results; `Workload.wave_bound()` is the least this mapping can take.

Every step is its own remote command, `sleep D`, as for `release` and the floor.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .workloads import Workload

MAPPING = {
    "ansible": (
        "one play per wave (`hosts:` the wave's hosts, `strategy: free`, `gather_facts: false`), one "
        "task per play: `raw: \"{{ item }}\"` looping over that host's steps of the wave (a host "
        "variable), so each step is one `raw` command; forks = hosts, `pipelining = True`, "
        "OpenSSH with `ControlMaster=auto`/`ControlPersist` (a fresh control directory per run)."
    ),
    "pyinfra": (
        "one `server.shell` operation per wave (inside `host.loop`, so waves line up across hosts), "
        "its `commands` that host's steps of the wave, one remote command each; `--parallel` = hosts, "
        "`-y`; pyinfra waits for every host between operations, which is the wave barrier."
    ),
    "cannot": (
        "A dependency between steps on different hosts without a barrier: with `strategy: free` "
        "(or pyinfra's `--no-wait`) a host runs its own tasks in order but never waits for another "
        "host, so the only sound mapping is a play (an operation) per wave, and every host waits "
        "for the slowest step of the wave. Two steps of a wave on the same host run one after "
        "another: a host runs one task (operation) at a time, and `raw` cannot be `async`."
    ),
}


def executable(name: str) -> str | None:
    """A tool's command, next to this Python first (a virtualenv's bin/), then on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def _wave_commands(w: Workload) -> dict[str, list[list[str]]]:
    plan = w.wave_plan()
    return {h: [[f"sleep {s.duration:g}" for s in wave.get(h, [])] for wave in plan] for h in w.hosts}


# -- Ansible --------------------------------------------------------------------------------

def write_ansible(w: Workload, where: Path, connections: dict[str, dict]) -> None:
    where.mkdir(parents=True, exist_ok=True)
    waves = _wave_commands(w)
    inventory = {"all": {"hosts": {}}}
    for h in w.hosts:
        c = connections[h]
        inventory["all"]["hosts"][h] = {
            "ansible_host": c["address"], "ansible_port": c["port"], "ansible_user": c["user"],
            "ansible_ssh_private_key_file": c["identity"], "bench_waves": waves[h]}
    (where / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    plays = []
    for i, wave in enumerate(w.wave_plan()):
        plays.append({
            "name": f"wave {i}", "hosts": ":".join(sorted(wave, key=w.hosts.index)),
            "gather_facts": False, "strategy": "free",
            "tasks": [{"name": "steps", "raw": "{{ item }}", "loop": f"{{{{ bench_waves[{i}] }}}}"}],
        })
    (where / "playbook.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    known_hosts = connections[w.hosts[0]]["known_hosts"]
    (where / "ansible.cfg").write_text(f"""\
[defaults]
inventory = {where / 'inventory.yml'}
forks = {len(w.hosts)}
host_key_checking = True
gathering = explicit
retry_files_enabled = False
deprecation_warnings = False
local_tmp = {where / 'tmp'}

[ssh_connection]
pipelining = True
control_path_dir = {where / 'cp'}
ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o PreferredAuthentications=publickey
""")


def ansible_command(where: Path) -> tuple[list[str], dict[str, str]] | None:
    exe = executable("ansible-playbook")
    if exe is None:
        return None
    env = {"ANSIBLE_CONFIG": str(where / "ansible.cfg"), "ANSIBLE_HOME": str(where / "home"),
           "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    return [exe, str(where / "playbook.yml")], env


def ansible_reset(where: Path) -> None:
    """Close the OpenSSH control masters the run left (ControlPersist), so each run connects anew."""
    cp = where / "cp"
    for sock in cp.glob("*") if cp.exists() else []:
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "bench"],
                       capture_output=True, timeout=10)
        sock.unlink(missing_ok=True)


# -- pyinfra --------------------------------------------------------------------------------

DEPLOY = """\
from pyinfra import host
from pyinfra.operations import server

for wave, commands in host.loop(enumerate(host.data.bench_waves)):
    if commands:
        server.shell(name=f"wave {wave}", commands=commands)
"""


def write_pyinfra(w: Workload, where: Path, connections: dict[str, dict]) -> None:
    where.mkdir(parents=True, exist_ok=True)
    waves = _wave_commands(w)
    hosts = []
    for h in w.hosts:
        c = connections[h]
        hosts.append((h, {
            "ssh_hostname": c["address"], "ssh_port": c["port"], "ssh_user": c["user"],
            "ssh_key": c["identity"], "ssh_known_hosts_file": c["known_hosts"],
            "ssh_strict_host_key_checking": "yes", "ssh_allow_agent": False,
            "ssh_look_for_keys": False, "bench_waves": waves[h]}))
    (where / "inventory.py").write_text(f"hosts = {hosts!r}\n")
    (where / "deploy.py").write_text(DEPLOY)


def pyinfra_command(w: Workload, where: Path) -> tuple[list[str], dict[str, str]] | None:
    exe = executable("pyinfra")
    if exe is None:
        return None
    return ([exe, "-y", "--parallel", str(len(w.hosts)), str(where / "inventory.py"),
             str(where / "deploy.py")], {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
