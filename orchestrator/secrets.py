"""Secrets never print: URL passwords and values of variables named like passwords or tokens."""

from __future__ import annotations

import os
import re

SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<tail>@)")
# In free text a space ends a URL, but SQLAlchemy renders a password's spaces unencoded: when the
# text is one URL and nothing else, its password runs to its only "@", spaces and all.
_WHOLE_URL = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@\s]*:)(?P<pw>[^@\r\n]+)(?P<tail>@[^@\s]*)")
MASK = "***"


def mask_url(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***`: a URL, or a whole message."""
    pattern = _WHOLE_URL if _WHOLE_URL.fullmatch(text) else _URL_PASSWORD
    return pattern.sub(_mask_password, text)


def _mask_password(m: re.Match[str]) -> str:
    # A `${VAR}` password is a reference, not a secret: it stays, to be resolved when used.
    return m[0] if "${" in m["pw"] else m["head"] + MASK + m["tail"]


def has_masked_password(url: str) -> bool:
    m = _URL_PASSWORD.search(url)
    return m is not None and m["pw"] == MASK


def secret_values() -> list[str]:
    """Values of environment variables whose names say they are secret (longest first)."""
    vals = [v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 4]
    return sorted(set(vals), key=len, reverse=True)


def mask_text(text: str) -> str:
    if not text:
        return text
    text = mask_url(text)
    for value in secret_values():
        text = text.replace(value, MASK)
    return text


def mask_value(value: object) -> object:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and SECRET_NAME.search(k) else mask_value(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_value(v) for v in value)
    return value
