"""The command environment: the one place where what a deploy, revert or health command sees is
built, on every transport alike."""

from __future__ import annotations

import os
from collections.abc import Mapping

# The tool's own namespace: RELEASE_JOURNAL, RELEASE_FAULT and whatever configures it later. A
# command gets the RELEASE_* variables `command_env` sets, never the ones the tool was started
# with: a deploy that runs `release` itself (or a tool reading RELEASE_JOURNAL) must not act on
# this run's journal, nor inherit its test-only fault injection.
TOOL_PREFIX = "RELEASE_"


def inherited_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What a command on this machine inherits from the tool's environment."""
    return {k: v for k, v in environ.items() if not k.startswith(TOOL_PREFIX)}


def command_env(*, release: str, service: str, host: str, action: str, version: str | None,
                previous: str | None, transport_env: Mapping[str, str] = {}) -> dict[str, str]:
    """`RELEASE_*` for one command. During a revert RELEASE_VERSION is what comes back and
    RELEASE_PREVIOUS_VERSION what goes away; empty means "none". `transport_env` is what the
    host's transport adds (a local host names the project directory)."""
    env = {
        "RELEASE_NAME": release, "RELEASE_SERVICE": service, "RELEASE_VERSION": version or "",
        "RELEASE_PREVIOUS_VERSION": previous or "", "RELEASE_HOST": host, "RELEASE_ACTION": action,
    }
    env.update(transport_env)
    return env
