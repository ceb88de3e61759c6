"""The `local` transport's plugin object and host settings: a directory on this machine."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from .base import Transport
from .registry import TransportContext, TransportPlugin


class LocalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str | None = None  # the host's directory, relative to the project; ~ expanded


def host_root(project_dir: Path, name: str, settings: LocalSettings) -> Path:
    """The directory commands of host `name` run in: `root`, or .release/hosts/NAME."""
    if settings.root:
        return (project_dir / os.path.expanduser(settings.root)).resolve()
    return project_dir / ".release" / "hosts" / name


def create(name: str, settings: LocalSettings, context: TransportContext) -> Transport:
    from .local import LocalTransport  # psutil and subprocess machinery only for a run

    return LocalTransport(name, host_root(context.project_dir, name, settings), context.project_dir)


plugin = TransportPlugin("local", LocalSettings, create)
