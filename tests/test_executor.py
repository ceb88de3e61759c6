"""The executor's scheduling: DAG walk, rolling updates, parallelism, command environment."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import orchestrator
from orchestrator.transports import CallLog, CommandResult, MockTransport, TransportPool
from helpers import journal_rows, write

STAMP = 'echo "$(date +%s.%N) {what} $RELEASE_SERVICE" >> events.log'


def service(deps: str = "", sleep: float = 0, hosts: str = "[h1]", extra: str = "") -> str:
    script = f"{STAMP.format(what='start')}; sleep {sleep}; {STAMP.format(what='end')}"
    return f"hosts: {hosts}\ndepends_on: [{deps}]\ndeploy: '{script}'\n{extra}"


def project(root: Path, services: dict[str, str], hosts: list[str] = ("h1",)) -> Path:
    inv = "hosts:\n" + "".join(f"  {h}: {{transport: local}}\n" for h in hosts)
    write(root, {"services.d/hosts.yaml": inv})
    write(root, {f"services.d/{n}.yaml": text for n, text in services.items()})
    return root


def read_events(root: Path, host: str = "h1") -> dict[tuple[str, str], float]:
    out = {}
    for line in (root / ".release/hosts" / host / "events.log").read_text().splitlines():
        ts, what, svc = line.split()
        out[(svc, what)] = float(ts)
    return out


def test_dag_walk_beats_waves(tmp_path: Path) -> None:
    """One slow node in wave 1 that only `after_slow` needs: the fast chain a -> b -> c runs through
    waves 1-3 while `slow` is still running; a barrier per wave would hold b until slow ended."""
    root = project(tmp_path, {
        "slow": service(sleep=2.0),
        "after_slow": service("slow"),
        "a": service(),
        "b": service("a"),
        "c": service("b"),
    })
    plan = orchestrator.plan(root, "v1")
    assert plan.waves == [["a", "slow"], ["after_slow", "b"], ["c"]]
    orchestrator.apply(root, "v1")
    ev = read_events(root)
    assert ev[("c", "end")] < ev[("slow", "end")]
    assert ev[("b", "start")] < ev[("slow", "end")]
    assert ev[("after_slow", "start")] >= ev[("slow", "end")]


def concurrency_probe(delay: float = 0.05):
    state = {"now": 0, "max": 0, "per_service": {}, "max_per_service": {}}

    async def handler(host: str, cmd) -> CommandResult:
        svc = cmd.env["RELEASE_SERVICE"]
        state["now"] += 1
        state["per_service"][svc] = state["per_service"].get(svc, 0) + 1
        state["max"] = max(state["max"], state["now"])
        state["max_per_service"][svc] = max(state["max_per_service"].get(svc, 0), state["per_service"][svc])
        await asyncio.sleep(delay)
        state["now"] -= 1
        state["per_service"][svc] -= 1
        return CommandResult(0)

    return state, handler


def mock_factory(handler, log: CallLog):
    def factory(project, hosts):
        return TransportPool({h: MockTransport(h, handler, log) for h in hosts})
    return factory


@pytest.mark.parametrize("max_parallel,hosts,expected", [(1, 6, 1), ('"50%"', 6, 3), ('"34%"', 6, 3), (4, 6, 4)])
def test_rolling_batch(tmp_path: Path, max_parallel, hosts: int, expected: int) -> None:
    names = [f"h{i}" for i in range(1, hosts + 1)]
    root = project(tmp_path, {"svc": f"hosts: [{', '.join(names)}]\ndeploy: 'true'\nmax_parallel: {max_parallel}\n"},
                   hosts=names)
    state, handler = concurrency_probe()
    log = CallLog()
    orchestrator.apply(root, "v1", transports=mock_factory(handler, log))
    assert state["max_per_service"]["svc"] == expected
    assert sorted(c.host for c in log.calls) == sorted(names)


def test_global_parallelism_cap(tmp_path: Path) -> None:
    names = [f"h{i}" for i in range(1, 7)]
    services = {f"s{i}": f"hosts: [{', '.join(names)}]\ndeploy: 'true'\nmax_parallel: 6\n" for i in range(4)}
    root = project(tmp_path, services, hosts=names)
    state, handler = concurrency_probe()
    orchestrator.apply(root, "v1", parallelism=5, transports=mock_factory(handler, CallLog()))
    assert state["max"] == 5


def test_rollout_stops_at_first_failed_host(tmp_path: Path) -> None:
    names = [f"h{i}" for i in range(1, 5)]
    root = project(tmp_path, {
        "svc": f"hosts: [{', '.join(names)}]\ndeploy: 'true'\nmax_parallel: 1\n",
        "dependent": "hosts: [h1]\ndeploy: 'true'\ndepends_on: [svc]\n",
    }, hosts=names)
    log = CallLog()

    def handler(host, cmd):
        return CommandResult(1 if host == "h2" else 0, stderr="boom")

    with pytest.raises(orchestrator.StepFailed) as err:
        orchestrator.apply(root, "v1", transports=mock_factory(handler, log))
    assert "svc on h2" in str(err.value)
    assert [(c.host, c.command.env["RELEASE_SERVICE"]) for c in log.calls] == [("h1", "svc"), ("h2", "svc")]
    # Revert touches exactly the hosts that changed (h1 ok, h2 failed), newest state first.
    log2 = CallLog()
    orchestrator.revert(root, transports=mock_factory(lambda h, c: CommandResult(0), log2))
    reverted = sorted((c.host, c.command.env["RELEASE_ACTION"]) for c in log2.calls)
    assert reverted == [("h1", "revert"), ("h2", "revert")]


def test_step_waiting_for_a_slot_does_not_start_after_a_failure(tmp_path: Path) -> None:
    """Both hosts' intents are written at once; with --parallelism 1 one command waits for the
    other's slot. Once that one failed, the waiting one must not start: it is journaled as
    skipped, and revert leaves its host alone."""
    root = project(tmp_path, {"svc": "hosts: [h1, h2]\ndeploy: 'true'\nmax_parallel: 2\n"}, hosts=["h1", "h2"])
    log = CallLog()

    async def first_fails(host, cmd):
        await asyncio.sleep(0.2)  # the other host's intent is written meanwhile
        return CommandResult(1, stderr="boom")

    with pytest.raises(orchestrator.StepFailed):
        orchestrator.apply(root, "v1", parallelism=1, transports=mock_factory(first_fails, log))
    assert len(log.calls) == 1
    failed = log.calls[0].host
    other = "h2" if failed == "h1" else "h1"
    rows = journal_rows(root, "select host, status from steps where phase='apply' order by host")
    assert sorted(rows) == sorted([(failed, "failed"), (other, "skipped")])
    log2 = CallLog()
    orchestrator.revert(root, transports=mock_factory(lambda h, c: CommandResult(0), log2))
    assert [(c.host, c.command.env["RELEASE_ACTION"]) for c in log2.calls] == [(failed, "revert")]


def test_command_environment(tmp_path: Path) -> None:
    root = project(tmp_path, {
        "svc": "hosts: [h1]\ndeploy: 'env | grep ^RELEASE_ | sort > env.$RELEASE_ACTION'\n"
               "health: 'env | grep ^RELEASE_ | sort > env.$RELEASE_ACTION'\nversion: 1.8.2\n",
    })
    orchestrator.apply(root, "v2.3")
    env = dict(line.split("=", 1) for line in (root / ".release/hosts/h1/env.deploy").read_text().splitlines())
    # The run's mark, by which a lock takeover finds the commands of a dead run.
    assert len(env.pop("RELEASE_RUN_ID")) == 32
    assert env == {"RELEASE_NAME": "v2.3", "RELEASE_SERVICE": "svc", "RELEASE_VERSION": "1.8.2",
                   "RELEASE_PREVIOUS_VERSION": "", "RELEASE_HOST": "h1", "RELEASE_ACTION": "deploy",
                   "RELEASE_PROJECT_DIR": str(root.resolve())}
    health = (root / ".release/hosts/h1/env.health").read_text()
    assert "RELEASE_ACTION=health" in health
    orchestrator.revert(root)
    env = dict(line.split("=", 1) for line in (root / ".release/hosts/h1/env.revert").read_text().splitlines())
    # Reverting to nothing: the version coming back is empty, the one going away is named.
    assert env["RELEASE_VERSION"] == "" and env["RELEASE_PREVIOUS_VERSION"] == "1.8.2"
    assert env["RELEASE_ACTION"] == "revert"
