"""Notifications: what a run tells the outside world as it starts and ends.

Each `notify:` webhook of `services.d/release.yaml` gets a JSON POST for the events it names
(Slack's incoming webhooks read its `text`); the `post_apply` and `on_failure` hooks run after
the events that call for them (`hooks`). A webhook that is slow, down or answers an error is
retried with backoff within its `timeout`, logged as `notify.failed`, and never changes, fails or
delays the release past that timeout: deliveries run in the background while the release goes on,
and what is still undelivered when it ends is given up after the webhook's timeout.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from . import hooks
from .logs import get_logger
from .reports import headline
from .secrets import MASK, mask_text, mask_value
from .settings import Settings, Webhook

if TYPE_CHECKING:
    import httpx

    from .runs import RunResult

T = TypeVar("T")
ATTEMPTS = 3
TEXT_FAILURES = 3  # failed steps named in `text`; the others are counted
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def failed_steps(result: RunResult) -> list[dict[str, Any]]:
    """Every failed step of a run: node, host (None for a database), exit code, stderr tail."""
    return [{"node": s.node, "host": s.host, "revision": s.revision, "action": s.action,
             "exit_code": s.exit_code, "stderr_tail": s.stderr_tail, "detail": s.detail}
            for s in result.steps if s.outcome == "failed"]


def text(event: str, result: RunResult, phase: str, project: str | None = None) -> str:
    """One Slack-compatible line: `:x: release v2.5 failed: orders@app2 exit 3: orders broke`."""
    line = headline(event, result.release, phase, project)
    failed = [s for s in result.steps if s.outcome == "failed"]
    if failed:
        named = "; ".join(f"{s.label} {s.why}" for s in failed[:TEXT_FAILURES])
        more = len(failed) - TEXT_FAILURES
        line += f": {named}" + (f" (and {more} more)" if more > 0 else "")
    elif event in ("failed", "revert_failed") and (result.failures or result.message):
        line += f": {'; '.join(result.failures) or result.message}"
    # Slack reads &, < and > as markup.
    return mask_text(line).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def body(event: str, result: RunResult, phase: str, project: str | None = None) -> dict[str, Any]:
    """The JSON object every webhook gets, secrets masked."""
    counts = {k: sum(1 for s in result.steps if s.outcome == k) for k in ("ok", "failed", "skipped")}
    return mask_value({  # type: ignore[return-value]
        "event": event, "release": result.release, "state": result.state, "phase": phase,
        "project": project, "message": result.message, "failed": failed_steps(result), "steps": counts,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "text": text(event, result, phase, project)})


def shown_url(url: str) -> str:
    """A webhook's URL as logs show it: scheme and host; its path and query (a Slack webhook's
    secret) and any password masked. A `${VAR}` reference is not a secret and shows as written."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return mask_text(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return mask_text(f"{parts.scheme}://{host}/{MASK}" if parts.path.strip("/") or parts.query
                     else f"{parts.scheme}://{host}")


def resolve(url: str) -> str:
    """`${VAR}` taken from the environment now; KeyError names a variable that is not set."""
    return _VAR.sub(lambda m: os.environ[m[1]], url)


class Notifier:
    """Sends the events of one or more runs (an apply and its auto-revert) and runs the hooks
    that follow them. Used inside the run's event loop: `await notifier(event, result, phase)`,
    and the run wrapped in `notifier.delivering(...)` so that its deliveries end with it."""

    def __init__(self, root: Path, cfg: Settings, *, attempts: int = ATTEMPTS) -> None:
        self.root = Path(root)
        self.cfg = cfg
        self.attempts = attempts
        self.project = cfg.project
        self._sending: dict[int, list[asyncio.Task[None]]] = {}
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, event: str, result: RunResult, phase: str) -> None:
        wanted = [(i, w) for i, w in enumerate(self.cfg.notify) if event in w.events]
        if wanted:
            data = body(event, result, phase, self.project)
            for i, hook in wanted:
                queue = self._sending.setdefault(i, [])
                # Each webhook gets its events in order: `failed` never overtakes `started`.
                queue.append(asyncio.create_task(self._deliver(hook, event, data, queue[-1] if queue else None)))
        if getattr(self.cfg.hooks, hooks.AFTER.get(event, ""), None):
            await asyncio.to_thread(hooks.after, self.root, self.cfg.hooks, event, result, phase)

    async def delivering(self, run: Coroutine[Any, Any, T]) -> T:
        """Await `run`, then what its events still have to deliver (at most each webhook's timeout)."""
        try:
            return await run
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        async def settle(i: int, tasks: list[asyncio.Task[None]]) -> None:
            _, pending = await asyncio.wait(tasks, timeout=self.cfg.notify[i].timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        sending, self._sending = self._sending, {}
        await asyncio.gather(*(settle(i, tasks) for i, tasks in sending.items()))
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _deliver(self, hook: Webhook, event: str, data: dict[str, Any],
                       after: asyncio.Task[None] | None) -> None:
        log = get_logger(release=data["release"]).bind(url=shown_url(hook.url), release_event=event)
        try:
            if after is not None:
                await asyncio.wait([after])
            try:
                url = resolve(hook.url)
            except KeyError as exc:
                log.warning("notify.failed", why=f"${{{exc.args[0]}}} in the webhook's URL is not set")
                return
            why = await self._post(url, hook, data, log)
            if why:
                log.warning("notify.failed", why=why)
            else:
                log.debug("notify.sent")
        except asyncio.CancelledError:
            log.warning("notify.failed", why=f"not delivered within its timeout ({hook.timeout:g}s); given up")
            raise
        except Exception as exc:  # noqa: BLE001 - a notification never fails the release
            log.warning("notify.failed", why=f"{type(exc).__name__}: {mask_text(str(exc))}")

    async def _post(self, url: str, hook: Webhook, data: dict[str, Any], log: Any) -> str | None:
        """None once delivered; else why the last attempt failed. All attempts, with their
        backoff, fit in the webhook's timeout."""
        import httpx  # a tenth of a second of start-up: paid only by a run that sends a webhook

        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False,
                                             headers={"User-Agent": "release-orchestrator"})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hook.timeout
        backoff = min(0.5, hook.timeout / 8)
        why, attempt = "not attempted", 0
        while attempt < self.attempts:
            left = deadline - loop.time()
            if left <= 0:
                break
            attempt += 1
            try:
                async with asyncio.timeout(left):
                    response = await self._client.post(url, json=data, timeout=left)
                if response.is_success:
                    return None
                why = f"HTTP {response.status_code}"
                if response.is_client_error and response.status_code not in (408, 429):
                    break  # the request itself is wrong: another attempt gets the same answer
            except (TimeoutError, httpx.TimeoutException):
                why = f"no answer within its timeout ({hook.timeout:g}s)"
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}".replace(url, shown_url(hook.url))
            log.debug("notify.attempt_failed", attempt=attempt, why=why)
            if attempt < self.attempts:
                await asyncio.sleep(max(0.0, min(backoff, deadline - loop.time())))
                backoff *= 2
        return f"{why} ({attempt} attempt{'s' if attempt != 1 else ''})"
