"""The `ssh` transport's plugin object and host settings; asyncssh is imported only by `create`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .base import Transport
from .registry import TransportContext, TransportPlugin


class SSHSettings(BaseModel):
    """An SSH host of the inventory (see docs/ssh.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    port: int = Field(22, ge=1, le=65535)
    user: str | None = None
    identity: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    connect_timeout: float = Field(10, gt=0)
    keepalive_interval: float = Field(5, gt=0)
    keepalive_count_max: int = Field(3, ge=1)
    jump: str | None = None  # another inventory host, used as ProxyJump


def check_inventory(hosts: dict[str, SSHSettings], transports: dict[str, str]) -> list[str]:
    """A jump host must exist, be an ssh host, and not lead back to where it started."""
    problems = []
    for name, spec in hosts.items():
        if spec.jump is None:
            continue
        where = f"hosts.{name}.jump"
        if spec.jump not in transports:
            problems.append(f"{where}: unknown host {spec.jump!r}")
        elif spec.jump not in hosts:
            problems.append(f"{where}: {spec.jump!r} is not an ssh host")
        else:
            seen, hop = [name], spec.jump
            while hop in hosts and hop not in seen:
                seen.append(hop)
                hop = hosts[hop].jump
            if hop in seen:
                problems.append(f"{where}: jump hosts loop: {' -> '.join([*seen, hop])}")
    return problems


def create(name: str, settings: SSHSettings, context: TransportContext) -> Transport:
    from .ssh import SSHTransport  # asyncssh is imported only when an SSH host is used

    jump = context.lookup(settings.jump) if settings.jump else None
    if jump is not None and not isinstance(jump, SSHTransport):
        raise TypeError(f"host {name}: jump host {settings.jump} is not an ssh host")
    return SSHTransport(name, settings, jump=jump, handshakes=context.handshakes)


plugin = TransportPlugin("ssh", SSHSettings, create, check_inventory)
