"""The one small interface every transport implements (pyinfra-style connectors).

A transport runs shell commands on one host. The executor never knows whether the
host is a directory on this machine or a server behind SSH.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self


TAIL_BYTES = 4000


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None  # None: no exit status (timed out, connection lost)
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    timed_out: bool = False
    error: str | None = None  # transport-level failure (host lost, connect refused)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.error is None

    def describe(self) -> str:
        """One line saying why this command failed, with the tail of its stderr."""
        if self.error:
            why = self.error
        elif self.timed_out:
            why = f"timed out after {self.duration:.1f}s"
        else:
            why = f"exit code {self.exit_code}"
        tail = self.stderr.strip().splitlines()[-3:]
        return why + (": " + " | ".join(tail) if tail else "")


@dataclass
class Command:
    """A shell command and the environment it runs with (values quoted by the transport)."""

    script: str
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 300.0


class Transport(abc.ABC):
    """One host. `connect` is called once per run before the first command.

    `async with transport:` connects and closes it, as httpx transports do.
    """

    name: str  # the inventory host name

    async def connect(self) -> None:  # noqa: B027 - optional for transports with no session
        """Open the session; raise HostUnreachable naming the host when it cannot."""

    @abc.abstractmethod
    async def run(self, command: Command) -> CommandResult:
        """Run `sh -c script` in the host's working directory; never raises for command failure."""

    async def close(self) -> None:  # noqa: B027
        """Release the session. Safe to call twice."""

    def kill_running(self) -> None:  # noqa: B027
        """Second Ctrl-C: stop every command this transport started, now."""

    def environment(self) -> dict[str, str]:
        """Variables this host adds to every command's environment (the core merges them in)."""
        return {}

    def dependencies(self) -> list[Transport]:
        """Transports this one reaches its host through (an SSH jump host): they are closed
        after it, since a kill still under way here may need them."""
        return []

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def has_state(self) -> bool:
        """False when the host was never set up, so nothing can run there and a read-only
        question must not create it (a local host whose directory does not exist yet)."""
        return True


def tail(text: str | bytes | None, limit: int = TAIL_BYTES) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text[-limit:]
