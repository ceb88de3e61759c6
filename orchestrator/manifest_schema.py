"""The JSON Schema of the manifests, made from the pydantic models that load them (`release schema`).

One document: every model under `$defs`, and at the top either any file of `services.d/` or the
one kind asked for. A host of the inventory takes the settings of its transport plugin, each
plugin's model with the `transport` key that chooses it. Editors use it to complete and check
manifests as they are typed; `release validate` stays the authority (cross-file checks, names).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .errors import InputError
from .manifests import NAME_RE, DatabaseSpec, ServiceSpec, _InventoryFile
from .settings import Settings
from .transports import registry

# Draft 7, which editors' YAML support (yaml-language-server) reads; the models' schemas use
# nothing newer, and `$defs` is only where the `$ref`s point.
DIALECT = "http://json-schema.org/draft-07/schema#"
# The transports a host may name without `transport:` (the inventory format's own defaults).
IMPLIED = {"local", "ssh"}  # local without an `address`, ssh with one
KINDS = {
    "all": ["Service", "Database", "Inventory", "Settings"],
    "node": ["Service", "Database"],
    "service": ["Service"],
    "database": ["Database"],
    "inventory": ["Inventory"],
    "settings": ["Settings"],
}


def transport_models() -> dict[str, type[BaseModel]]:
    """Each installed transport's host settings model; a plugin that does not load is left out
    (validation reports it where a host names it)."""
    out = {}
    for name in registry.known():
        try:
            out[name] = registry.plugin(name).settings
        except registry.PluginError:
            continue
    return out


def models() -> dict[str, type[BaseModel]]:
    """The models whose fields a manifest may hold, by the name their schema has in `$defs`."""
    return {"Service": ServiceSpec, "Database": DatabaseSpec, "Inventory": _InventoryFile,
            "Settings": Settings}


def build(kind: str = "all") -> dict[str, Any]:
    if kind not in KINDS:
        raise InputError(f"unknown schema kind {kind!r}: use {', '.join(KINDS)}")
    roots = models()
    transports = transport_models()
    everything = [*roots.values(), *transports.values()]
    refs, doc = models_json_schema([(m, "validation") for m in everything], ref_template="#/$defs/{model}")
    defs: dict[str, Any] = doc["$defs"]

    def name_of(model: type[BaseModel]) -> str:
        return refs[(model, "validation")]["$ref"].rsplit("/", 1)[1]

    for friendly, model in roots.items():  # short names for the four kinds of file
        defs[friendly] = defs.pop(name_of(model))
        defs[friendly]["title"] = friendly
    for spec in (defs["Service"], defs["Database"]):
        # The loader fills in `name` from the file's stem, and reads `version: 2` as "2".
        spec["required"] = [f for f in spec["required"] if f != "name"]
        spec["properties"]["name"]["pattern"] = NAME_RE.pattern
    defs["Service"]["properties"]["version"]["anyOf"].insert(1, {"type": "integer"})

    hosts = []
    for transport, model in transports.items():
        key = name_of(model)
        host = defs[key]
        host["properties"] = {"transport": {"const": transport, "title": "Transport"}, **host["properties"]}
        if transport not in IMPLIED:
            host["required"] = ["transport", *host.get("required", [])]
        hosts.append({"$ref": f"#/$defs/{key}"})
    inventory = defs["Inventory"]["properties"]
    inventory["hosts"]["additionalProperties"] = {"anyOf": hosts}
    for field in ("hosts", "groups"):
        inventory[field]["propertyNames"] = {"pattern": NAME_RE.pattern}

    return {
        "$schema": DIALECT,
        "title": f"release manifests ({kind})",
        "description": ("services.d/*.yaml: a service or a database; services.d/hosts.yaml: the "
                        "inventory; services.d/release.yaml: the project's settings"),
        "anyOf": [{"$ref": f"#/$defs/{k}"} for k in KINDS[kind]],
        "$defs": dict(sorted(defs.items())),
    }
