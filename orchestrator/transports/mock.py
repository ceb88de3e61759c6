"""MockTransport (after httpx's): a handler decides each command's result; every call is recorded.

For unit tests of the executor and plan without touching the world.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Union

from .base import Command, CommandResult, Transport

Handler = Callable[[str, Command], Union[CommandResult, Awaitable[CommandResult]]]


@dataclass
class Call:
    host: str
    command: Command
    result: CommandResult | None = None


@dataclass
class CallLog:
    calls: list[Call] = field(default_factory=list)

    def by_action(self, action: str) -> list[Call]:
        return [c for c in self.calls if c.command.env.get("RELEASE_ACTION") == action]


def ok_handler(host: str, command: Command) -> CommandResult:
    return CommandResult(0)


class MockTransport(Transport):
    def __init__(self, name: str, handler: Handler = ok_handler, log: CallLog | None = None) -> None:
        self.name = name
        self.handler = handler
        self.log = log if log is not None else CallLog()

    async def run(self, command: Command) -> CommandResult:
        call = Call(self.name, command)
        self.log.calls.append(call)
        result = self.handler(self.name, command)
        if inspect.isawaitable(result):
            result = await result
        await asyncio.sleep(0)
        call.result = result
        return result
