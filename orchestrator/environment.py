"""The command environment: the one place where what a deploy, revert or health command sees is
built, on every transport alike."""

from __future__ import annotations

from collections.abc import Mapping


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
