"""Secrets never print: URL passwords, secret query parameters, and the values of secret
environment variables (named like passwords or tokens, or listed in `secrets:` of release.yaml).

Everything here runs on every line of output, every log event and every stored step, some of
them megabytes long: it is linear in the text, with no regex that can backtrack over it.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable

SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET", re.IGNORECASE)
# A variable that is secret by its name only may hold anything ("true", "1"); masking every
# occurrence of a value that short would garble output without hiding anything worth hiding. A
# variable listed in `secrets:` was named on purpose: its value is masked however short.
MIN_NAMED_LENGTH = 4
MASK = "***"

# Query parameters whose value is a secret: `?password=`, `&access_token=`, `&pwd=`.
_SECRET_KEY = re.compile(r"PASSWORD|PASSWD|PWD|TOKEN|SECRET", re.IGNORECASE)
_SCHEME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_AUTHORITY_END = re.compile(r"[/?#\s]")
_WHOLE_AUTHORITY_END = re.compile(r"[/?#]")
_AT = re.compile("@")
_SPACE = re.compile(r"\s")
# The key runs over word characters to the `=` and no further: at most one backtrack per key.
_QUERY_PARAM = re.compile(r"[?&;]([\w.-]+)=([^&#;\s\"'<>]*)")

_registered: set[str] = set()
_cache: tuple[tuple[int, list[str], tuple[str | None, ...]], list[tuple[str, str]], re.Pattern[str] | None] | None = None


def register(names: Iterable[str]) -> None:
    """Environment variables that are secret whatever their names: `secrets:` of release.yaml.
    Added to those registered before (a revert knows today's list and the journaled one)."""
    global _cache
    new = set(names) - _registered
    if new:
        _registered.update(new)
        _cache = None


def is_secret_name(name: str) -> bool:
    return name in _registered or _secret_by_name(name)


@functools.lru_cache(maxsize=4096)
def _secret_by_name(name: str) -> bool:
    # A JSON plan asks this of the same few keys once per node: answer each from memory.
    return SECRET_NAME.search(name) is not None


def _snapshot() -> tuple[list[tuple[str, str]], re.Pattern[str] | None]:
    """The secret variables and one pattern matching any of their values, rebuilt only when the
    environment changed: checking that costs a lookup per secret variable, not a scan of it all."""
    global _cache
    if _cache is not None:
        (size, names, values), items, pattern = _cache
        if size == len(os.environ) and values == tuple(os.environ.get(n) for n in names):
            return items, pattern
    names = sorted({n for n in os.environ if is_secret_name(n)} | _registered)
    found: dict[str, str] = {}
    for name in names:
        value = os.environ.get(name)
        if value and (name in _registered or len(value) >= MIN_NAMED_LENGTH):
            found.setdefault(value, name)
    # Longest first: a value that contains another is replaced whole, not around the shorter one.
    items = sorted(((n, v) for v, n in found.items()), key=lambda nv: (-len(nv[1]), nv[0]))
    pattern = re.compile("|".join(re.escape(v) for _, v in items)) if items else None
    _cache = ((len(os.environ), names, tuple(os.environ.get(n) for n in names)), items, pattern)
    return items, pattern


def secret_items() -> list[tuple[str, str]]:
    """(name, value) of every secret environment variable, longest value first, one per value."""
    return list(_snapshot()[0])


def secret_values() -> list[str]:
    return [v for _, v in _snapshot()[0]]


def secret_pattern() -> re.Pattern[str] | None:
    """One pattern matching any secret value (longest first), or None when there is none."""
    return _snapshot()[1]


def _is_reference(password: str) -> bool:
    # A `${VAR}` password is a reference, not a secret: it stays, to be resolved when used.
    return "${" in password


class _Next:
    """The first match of a pattern at or after a position, for positions that only grow: a
    search is made only past the last match found, so all of them read the text once."""

    def __init__(self, text: str, pattern: re.Pattern[str]) -> None:
        self.text, self.pattern, self.found, self.searched = text, pattern, -1, -1

    def at(self, pos: int) -> int:
        if not (self.searched != -1 and self.searched <= pos and (self.found == -1 or self.found >= pos)):
            m = self.pattern.search(self.text, pos)
            self.found, self.searched = (m.start() if m else -1), pos
        return self.found


def _password_span(text: str, start: int, whole: bool, next_at: _Next, next_space: _Next) -> tuple[int, int] | None:
    """Where the password of the URL whose authority starts at `start` (after `://`) is.

    The authority ends at the first `/`, `?`, `#` or space, and its user information at its last
    `@`: a raw `@` in a password is invalid, but it is what a careless substitution gives. With
    no `@` there but a `:` followed by something else than a port, the password holds a raw `/`
    (SQLAlchemy reads it so): it runs to the next `@` before a space. A text that is one URL and
    nothing else may have spaces in its password (SQLAlchemy renders them unencoded), or a raw
    `@` and `/` both: there a password runs to the text's last `@`.
    """
    m = (_WHOLE_AUTHORITY_END if whole else _AUTHORITY_END).search(text, start)
    end = m.start() if m else len(text)
    at = text.rfind("@", start, end)
    if at == -1:
        colon = text.find(":", start, end)
        if colon == -1 or text[colon + 1:end].isdigit():  # no user information, or a port
            return None
    else:
        colon = text.find(":", start, at)
        if colon == -1:
            return None
        if not whole:
            return (colon + 1, at) if colon + 1 < at else None
    if whole:
        last = text.rfind("@")
        return (colon + 1, last) if last > colon + 1 and _SPACE.search(text, last) is None else None
    at, space = next_at.at(end), next_space.at(end)
    return (colon + 1, at) if at != -1 and (space == -1 or at < space) else None


def _is_whole_url(text: str, first: int) -> bool:
    return first > 0 and "\n" not in text and "\r" not in text and all(c in _SCHEME for c in text[:first])


def url_secrets(url: str) -> list[tuple[int, int]]:
    """Where the secrets of one URL are: its password and its secret query parameters' values
    (`${VAR}` references excluded)."""
    spans = []
    first = url.find("://")
    if first != -1:
        span = _password_span(url, first + 3, _is_whole_url(url, first), _Next(url, _AT), _Next(url, _SPACE))
        if span is not None and not _is_reference(url[span[0]:span[1]]):
            spans.append(span)
    spans += [m.span(2) for m in _QUERY_PARAM.finditer(url) if _secret_param(m)]
    return spans


def _secret_param(m: re.Match[str]) -> bool:
    return bool(m[2]) and not _is_reference(m[2]) and _SECRET_KEY.search(m[1]) is not None


def has_masked_password(url: str) -> bool:
    """A URL whose password the journal masked: it cannot be used as it stands."""
    return any(url[s:e] == MASK for s, e in url_secrets(url))


def mask_url(text: str) -> str:
    """`text` with the password of every URL in it, and every secret query parameter, replaced by
    `***`: one URL, or a whole message."""
    first = text.find("://")
    if first == -1:
        return text
    whole = _is_whole_url(text, first)
    next_at, next_space = _Next(text, _AT), _Next(text, _SPACE)
    out: list[str] = []
    copied = 0
    i = first
    while i != -1:
        start = i + 3
        # A password found by looking past the authority may span a later "://": it is masked.
        if i > 0 and text[i - 1] in _SCHEME and i >= copied:
            span = _password_span(text, start, whole and i == first, next_at, next_space)
            if span is not None and not _is_reference(text[span[0]:span[1]]):
                out += [text[copied:span[0]], MASK]
                copied = span[1]
        i = text.find("://", start)
    out.append(text[copied:])
    return _QUERY_PARAM.sub(lambda m: m[0][:m.start(2) - m.start()] + MASK if _secret_param(m) else m[0],
                            "".join(out))


def mask_text(text: str) -> str:
    return _mask_text(text, secret_pattern())


def _mask_text(text: str, pattern: re.Pattern[str] | None) -> str:
    if not text:
        return text
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return mask_url(text)


def mask_value(value: object) -> object:
    # The secrets are looked up once for the whole value, not once per string in it: a JSON plan
    # of 10,000 nodes holds hundreds of thousands.
    return _mask_value(value, secret_pattern())


def _mask_value(value: object, pattern: re.Pattern[str] | None) -> object:
    if isinstance(value, str):
        return _mask_text(value, pattern)
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_name(k) else _mask_value(v, pattern))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask_value(v, pattern) for v in value)
    return value
