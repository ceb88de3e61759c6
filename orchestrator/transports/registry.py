"""Transport plugins, found by the inventory's `transport:` name in the entry point group
`release.transports`; `local` and `ssh` are registered there by this package itself.

Kept light: validating an inventory loads only the plugin objects and their settings models. A
plugin imports its heavy machinery (asyncssh for ssh) inside `create`, when a run needs a host.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from .base import Transport

GROUP = "release.transports"

S = TypeVar("S", bound=BaseModel)


@dataclass(frozen=True)
class TransportContext:
    """What a run shares with every transport it creates."""

    project_dir: Path
    handshakes: asyncio.Semaphore  # run-wide cap on SSH-style handshakes (sshd's MaxStartups)
    lookup: Callable[[str], Transport]  # another inventory host's transport, e.g. a jump host


@dataclass(frozen=True)
class TransportPlugin(Generic[S]):
    """What an entry point of `release.transports` names.

    `check_inventory(hosts, transports)` sees this transport's hosts with their settings and every
    inventory host's transport name; it returns cross-host problems as "hosts.NAME.FIELD: message".
    """

    name: str
    settings: type[S]
    create: Callable[[str, S, TransportContext], Transport]
    check_inventory: Callable[[dict[str, S], dict[str, str]], list[str]] | None = None


class PluginError(LookupError):
    """No usable plugin by that name; the message says why, for a validation error."""


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def known() -> list[str]:
    """The names of every registered transport, sorted."""
    return sorted(_entry_points())


@functools.cache
def plugin(name: str) -> TransportPlugin[Any]:
    """The plugin registered as `name`, loaded once per process."""
    ep = _entry_points().get(name)
    if ep is None:
        raise PluginError(f"unknown transport {name!r} (known: {', '.join(known()) or 'none'})")
    try:
        found = ep.load()
    except Exception as exc:  # noqa: BLE001 - a broken third-party plugin is an input problem
        raise PluginError(f"transport {name!r} ({ep.value}) could not be loaded: "
                          f"{type(exc).__name__}: {exc}") from None
    if not isinstance(found, TransportPlugin) or found.name != name:
        raise PluginError(f"transport {name!r} ({ep.value}) is not a TransportPlugin named {name!r}")
    return found
