"""Hooks: shell commands from `services.d/release.yaml` run on the controller around a release.

`pre_apply` runs once the plan is known, before the release record is created: a non-zero exit
refuses the apply and nothing has changed. `post_apply` runs after an applied release,
`on_failure` after a failed or interrupted run or a failed revert; their failures are logged
and never change the release's outcome. Each runs with `sh -c` in the project directory, with
the controller's environment plus the RELEASE_* variables below; its output goes to the log.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import StepFailed
from .logs import get_logger
from .settings import Hooks
from .steps import tail

if TYPE_CHECKING:
    from .plan import Plan
    from .runs import RunResult

TIMEOUT = 600.0  # seconds a hook may run before it is killed
# The hook that follows each event of a run (`started`, `applied`, ... as webhooks name them).
AFTER = {"applied": "post_apply", "failed": "on_failure", "interrupted": "on_failure",
         "revert_failed": "on_failure"}


class HookFailed(StepFailed):
    """The `pre_apply` hook refused the apply (exit 1): nothing was changed."""


@dataclass
class HookRun:
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None  # could not start, or timed out

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None

    def describe(self) -> str:
        why = self.error or f"exit code {self.exit_code}"
        last = tail(self.stderr, lines=3)
        return why + (": " + " | ".join(last.splitlines()) if last else "")


def run(root: Path, hook: str, command: str, env: Mapping[str, str], timeout: float = TIMEOUT) -> HookRun:
    """Run one hook to its end (killed, with everything it started, after `timeout` s) and log it."""
    log = get_logger(release=env.get("RELEASE_NAME")).bind(hook=hook)
    log.info("hook.start", command=command)
    try:
        proc = subprocess.Popen(["sh", "-c", command], cwd=root, env={**os.environ, **env},
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", start_new_session=True)
    except OSError as exc:
        result = HookRun(None, error=f"could not start: {exc}")
    else:
        try:
            out, err = proc.communicate(timeout=timeout)
            result = HookRun(proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            result = HookRun(None, out, err, error=f"timed out after {timeout:g}s")
    if result.stdout.strip() or result.stderr.strip():
        log.info("hook.output", stdout=result.stdout.strip(), stderr=result.stderr.strip())
    if result.ok:
        log.info("hook.done")
    else:
        log.warning("hook.failed", why=result.describe())
    return result


def environment(hook: str, release: str, **values: str | None) -> dict[str, str]:
    """RELEASE_HOOK, RELEASE_NAME and each of `values` as RELEASE_<NAME> (None: empty)."""
    env = {"RELEASE_HOOK": hook, "RELEASE_NAME": release}
    env.update({f"RELEASE_{k.upper()}": v or "" for k, v in values.items()})
    return env


def pre_apply(root: Path, hooks: Hooks, p: Plan) -> None:
    """Run `pre_apply` for a plan about to run; its non-zero exit raises HookFailed (exit 1)."""
    if not hooks.pre_apply:
        return
    env = environment("pre_apply", p.release, event="pre_apply", phase="apply", state="planned",
                      previous=p.previous, changes=" ".join(s.node for s in p.changes), failed="",
                      project_dir=str(root))
    result = run(root, "pre_apply", hooks.pre_apply, env)
    if not result.ok:
        raise HookFailed(f"release {p.release} refused by the pre_apply hook ({result.describe()}); "
                         "nothing was changed")


def after(root: Path, hooks: Hooks, event: str, result: RunResult, phase: str) -> None:
    """Run the hook that follows `event` (post_apply, on_failure), if any; never raises."""
    name = AFTER.get(event)
    command = getattr(hooks, name) if name else None
    if not name or not command:
        return
    failed = [s.where for s in result.steps if s.outcome == "failed"]
    env = environment(name, result.release, event=event, phase=phase, state=result.state,
                      failed=" ".join(dict.fromkeys(failed)), message=result.message, project_dir=str(root))
    try:
        run(root, name, command, env)
    except Exception:  # noqa: BLE001 - a hook after the release never changes its outcome
        get_logger(release=result.release).exception("hook.failed", hook=name)
