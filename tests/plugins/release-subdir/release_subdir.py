"""`transport: subdir`: a host is a directory of the project (`path:`), commands run there as
`sh -c`. The process handling (Ctrl-C shielding, killing the process tree) is the one `release`
uses for its own local hosts."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from orchestrator.errors import HostUnreachable
from orchestrator.transports import Command, CommandResult, Transport, TransportContext, TransportPlugin
from orchestrator.transports.local import kill_tree, run_shell


class SubdirSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)  # a misspelt key is refused

    path: str  # relative to the project directory; it must exist


class SubdirTransport(Transport):
    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self._running: set[int] = set()

    async def connect(self) -> None:
        if not self.directory.is_dir():
            raise HostUnreachable(f"host {self.name}: {self.directory} is not a directory")

    async def run(self, command: Command) -> CommandResult:
        return await run_shell(command.script, cwd=self.directory, env={**os.environ, **command.env},
                               timeout=command.timeout, running=self._running)

    def kill_running(self) -> None:
        for pid in list(self._running):
            kill_tree(pid)


def create(name: str, settings: SubdirSettings, context: TransportContext) -> Transport:
    return SubdirTransport(name, (context.project_dir / settings.path).resolve())


def check_inventory(hosts: dict[str, SubdirSettings], transports: dict[str, str]) -> list[str]:
    """Two hosts in one directory would deploy over each other."""
    first: dict[str, str] = {}
    problems = []
    for name, settings in hosts.items():
        path = os.path.normpath(settings.path)
        if path in first:
            problems.append(f"hosts.{name}.path: {settings.path!r} is host {first[path]}'s directory too")
        first.setdefault(path, name)
    return problems


plugin = TransportPlugin("subdir", SubdirSettings, create, check_inventory)
