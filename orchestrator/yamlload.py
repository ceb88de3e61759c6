"""Manifest YAML: the loader every manifest text goes through, and nothing else."""

from __future__ import annotations

import re
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """YAML with plain decimal numbers only (as YAML 1.2's core schema): 010, 0x1F, 1_000 or
    1:30 stay strings exactly as written instead of becoming 8, 31, 1000 or 90."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"),
                              list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: builds no arbitrary objects


def parse_manifest(path: str, text: str) -> tuple[dict[str, Any], list[str]]:
    """One manifest's mapping, or its problems ("PATH: WHERE: what"); an empty file is {}."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        return {}, [f"{path}: {where}: malformed YAML: {getattr(exc, 'problem', exc)}"]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return {}, [f"{path}: (file): expected a mapping, got {type(data).__name__}"]
    # YAML's "\0" escape writes a NUL, which a command cannot hold: a shell would run the
    # command cut short, an exec refuses it at apply time with the step left in doubt.
    return data, [f"{path}: {loc}: contains a NUL byte" for loc in _nul_fields(data)]


def _nul_fields(value: Any, loc: tuple[str, ...] = ()) -> list[str]:
    """Where NUL bytes are, as dotted field paths (`hosts.app1.root`)."""
    if isinstance(value, str):
        return [".".join(loc)] if "\0" in value else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    found = []
    for key, item in items:
        if "\0" in str(key):
            found.append(".".join((*loc, repr(key))))
        else:
            found += _nul_fields(item, (*loc, str(key)))
    return found
