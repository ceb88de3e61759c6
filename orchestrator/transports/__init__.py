"""Transports: plugins found through the `release.transports` entry points (see registry.py),
by the name in each host's `transport:` field, and built for a run by `make_pool`."""

from __future__ import annotations

from .base import Command, CommandResult, Transport
from .local import LocalTransport
from .mock import CallLog, MockTransport
from .pool import MAX_HANDSHAKES, TransportFactory, TransportPool, make_pool
from .registry import TransportContext, TransportPlugin

# commands.py still imports the old name; drop it once it calls make_pool.
make_transports = make_pool

__all__ = [
    "MAX_HANDSHAKES", "CallLog", "Command", "CommandResult", "LocalTransport", "MockTransport", "Transport",
    "TransportContext", "TransportFactory", "TransportPlugin", "TransportPool", "make_pool", "make_transports",
]
