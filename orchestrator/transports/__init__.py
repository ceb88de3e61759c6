"""Transports, found through a registry by the inventory's `transport` field."""

from __future__ import annotations

import asyncio
from typing import Callable

from ..manifests import Project
from .base import Command, CommandResult, Transport
from .local import LocalTransport
from .mock import CallLog, MockTransport
from .pool import TransportPool

MAX_HANDSHAKES = 10  # stock sshd MaxStartups
MAX_SESSIONS = 8  # below stock sshd MaxSessions (10)

TransportFactory = Callable[[Project, list[str]], TransportPool]


def make_transports(project: Project, hosts: list[str]) -> TransportPool:
    """One transport per host named, SSH ones sharing the run's handshake cap."""
    handshakes = asyncio.Semaphore(MAX_HANDSHAKES)
    out: dict[str, Transport] = {}

    def build(name: str) -> Transport:
        if name in out:
            return out[name]
        spec = project.inventory.hosts[name]
        if spec.kind == "local":
            out[name] = LocalTransport(name, project.local_root(name), project.root)
        else:
            from .ssh import SSHTransport  # asyncssh is imported only when an SSH host is used

            jump = build(spec.jump) if spec.jump else None
            out[name] = SSHTransport(name, spec, jump=jump, handshakes=handshakes, max_sessions=MAX_SESSIONS)
        return out[name]

    for h in hosts:
        build(h)
    return TransportPool(out)


__all__ = [
    "CallLog", "Command", "CommandResult", "LocalTransport", "MockTransport", "Transport",
    "TransportFactory", "make_transports",
]
