"""Manifests: `services.d/*.yaml` and `services.d/hosts.yaml` loaded into pydantic models.

Every problem is collected and reported at once, each naming the file and the field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InputError
from .settings import SETTINGS_FILE, Settings
from .settings import parse as parse_settings
from .transports import registry
from .yamlload import load_yaml, number_problems, parse_manifest, read_manifest_files

# Always used with fullmatch: with match, "$" also matches before a final newline ("v1\n").
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
MANIFEST_DIR = "services.d"
INVENTORY_FILE = "hosts.yaml"


def check_name(value: str, what: str = "name") -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValueError(f"{what} {value!r} does not match {NAME_RE.pattern}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _InventoryFile(_Strict):
    """hosts.yaml as written. A host's keys other than `transport` belong to its transport,
    whose own settings model checks them."""

    hosts: dict[str, Any] = Field(default_factory=dict)
    groups: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("hosts", "groups")
    @classmethod
    def _names(cls, value: dict) -> dict:
        for key in value:
            check_name(key, "host or group name")
        return value


@dataclass(frozen=True)
class HostSpec:
    """An inventory host: the name of the transport plugin that reaches it, and that plugin's
    validated settings."""

    transport: str
    settings: BaseModel


@dataclass(frozen=True)
class Inventory:
    hosts: dict[str, HostSpec] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)


def _count_or_percent(v: int | str) -> int | str:
    """A number of hosts: an integer, or "N%" of the service's hosts (rounded up, at least 1)."""
    if isinstance(v, bool):
        raise ValueError("must be an integer or a percentage like '50%'")
    if isinstance(v, int):
        if v < 1:
            raise ValueError("must be at least 1")
        return v
    m = re.fullmatch(r"(\d{1,3})%", v.strip())
    if not m or not 0 < int(m.group(1)) <= 100:
        raise ValueError(f"{v!r} is neither an integer nor a percentage like '50%'")
    return v.strip()


def _hosts_of(count: int | str, host_count: int) -> int:
    if isinstance(count, int):
        return count
    return max(1, math.ceil(host_count * int(count[:-1]) / 100))


class ServiceSpec(_Strict):
    name: str
    kind: Literal["service"] = "service"
    version: str | None = None
    hosts: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    deploy: str
    revert: str | None = None
    health: str | None = None
    health_retries: int = Field(0, ge=0)
    health_interval: float = Field(2, ge=0)
    max_parallel: int | str = 1
    timeout: float = Field(300, gt=0)
    current: str | None = None  # prints the version running on the host; empty or failing: none
    canary: int | str | None = None  # hosts changed first, then `soak`, then the rest
    soak: float = Field(0, ge=0)  # seconds of health checks after the canary hosts and the last host

    _check_name = field_validator("name")(lambda v: check_name(v))

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        return None if v is None else check_name(str(v), "version")

    @field_validator("max_parallel")
    @classmethod
    def _max_parallel(cls, v: int | str) -> int | str:
        return _count_or_percent(v)

    @field_validator("canary")
    @classmethod
    def _canary(cls, v: int | str | None) -> int | str | None:
        return None if v is None else _count_or_percent(v)

    def batch_size(self, host_count: int) -> int:
        return _hosts_of(self.max_parallel, host_count)

    def canary_size(self, host_count: int) -> int:
        """Hosts in the canary batch (0: no canary)."""
        return 0 if self.canary is None else min(host_count, _hosts_of(self.canary, host_count))


class DatabaseSpec(_Strict):
    name: str
    kind: Literal["database"]
    url: str
    migrations: str
    target: str = "head"
    depends_on: list[str] = Field(default_factory=list)
    timeout: float = Field(600, gt=0)
    # Directories (relative to the project) put in front of sys.path while the scripts load and
    # run, for revisions that import helper modules: Alembic's `prepend_sys_path`.
    python_path: list[str] = Field(default_factory=list)

    _check_name = field_validator("name")(lambda v: check_name(v))


NodeSpec = Union[ServiceSpec, DatabaseSpec]


@dataclass
class Project:
    """A release repository, loaded. `sources` are the manifest texts (journaled with a release)."""

    root: Path
    inventory: Inventory
    nodes: dict[str, NodeSpec]
    files: dict[str, str]  # node name -> manifest path relative to root
    sources: dict[str, str] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)

    @property
    def services(self) -> dict[str, ServiceSpec]:
        return {n: s for n, s in self.nodes.items() if isinstance(s, ServiceSpec)}

    @property
    def databases(self) -> dict[str, DatabaseSpec]:
        return {n: s for n, s in self.nodes.items() if isinstance(s, DatabaseSpec)}

    def hosts_of(self, service: ServiceSpec) -> list[str]:
        """Group names expanded, order kept, duplicates dropped."""
        out: list[str] = []
        for ref in service.hosts:
            for h in self.inventory.groups.get(ref, [ref]):
                if h not in out:
                    out.append(h)
        return out


def format_validation(path: str, exc: ValidationError, within: tuple[str, ...] = ()) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (*within, *err["loc"])) or "(file)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        out.append(f"{path}: {loc}: {msg}")
    return out


def read_sources(root: Path) -> dict[str, str]:
    """All manifest texts under services.d, keyed by their path relative to the project."""
    sources, unreadable = _read_sources(root)
    if unreadable:
        raise InputError("invalid manifests", problems=list(unreadable.values()))
    return sources


def _read_sources(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    mdir = root / MANIFEST_DIR
    if not mdir.is_dir():
        raise InputError(f"{mdir}: no {MANIFEST_DIR}/ directory here (use -C to name the project)")
    return read_manifest_files(mdir, MANIFEST_DIR)


def load_project(root: Path | str, sources: dict[str, str] | None = None) -> Project:
    """Parse manifests (from disk, or from journaled `sources`) into a Project.

    Raises InputError listing every problem found, each prefixed by its file.
    """
    root = Path(root).resolve()
    unreadable: dict[str, str] = {}
    if sources is None:
        sources, unreadable = _read_sources(root)
    problems = list(unreadable.values())
    inventory = Inventory()
    nodes: dict[str, NodeSpec] = {}
    files: dict[str, str] = {}
    inv_path = f"{MANIFEST_DIR}/{INVENTORY_FILE}"

    # Nodes whose file has its own problems: not reported again as "unknown" elsewhere.
    broken = {Path(p).stem for p in unreadable}
    inventory_ok = inv_path not in unreadable
    settings = Settings()
    for path, text in sources.items():
        if path == SETTINGS_FILE:  # reserved: the project's settings, not a node
            try:
                settings = parse_settings(text)
            except InputError as exc:
                problems.extend(exc.problems)
            continue
        data, found = parse_manifest(path, text)
        if found:
            problems.extend(found)
            broken.add(Path(path).stem)
            inventory_ok = inventory_ok and path != inv_path
            continue
        if path == inv_path:
            inventory, found = _load_inventory(path, data)
            problems.extend(found)
            inventory_ok = not found
            continue
        data.setdefault("name", Path(path).stem)
        broken.add(str(data["name"]))  # until it validates
        if isinstance(data.get("version"), float):
            # YAML reads 1.10 as the number 1.1: refuse rather than deploy the wrong version.
            problems.append(f"{path}: version: {data['version']!r} is a number in YAML; quote it "
                            f"(version: \"...\") so it stays exactly as written")
            continue
        if isinstance(data.get("version"), int) and not isinstance(data.get("version"), bool):
            data["version"] = str(data["version"])
        model = DatabaseSpec if data.get("kind") == "database" else ServiceSpec
        if data.get("kind") not in (None, "service", "database"):
            problems.append(f"{path}: kind: must be 'service' or 'database', not {data.get('kind')!r}")
            continue
        numbers = number_problems(model, data)
        if numbers:
            problems.extend(f"{path}: {p}" for p in numbers)
            continue
        try:
            spec = model.model_validate(data)
        except ValidationError as exc:
            problems.extend(format_validation(path, exc))
            continue
        if spec.name in nodes:
            problems.append(f"{path}: name: duplicate name {spec.name!r} (also in {files[spec.name]})")
            continue
        nodes[spec.name] = spec
        files[spec.name] = path
        broken.discard(spec.name)

    if inv_path not in sources and inv_path not in unreadable:
        problems.append(f"{inv_path}: (file): the inventory is missing")
        inventory_ok = False
    project = Project(root=root, inventory=inventory, nodes=nodes, files=files, sources=dict(sources),
                      settings=settings)
    problems.extend(_check_references(project, inv_path, broken, inventory_ok))
    if problems:
        raise InputError("invalid manifests", problems=problems)
    return project


def _load_inventory(path: str, data: dict[str, Any]) -> tuple[Inventory, list[str]]:
    """The inventory, each host's settings checked by its transport; with problems, an empty one
    (so that services do not report its hosts again as unknown)."""
    try:
        raw = _InventoryFile.model_validate(data)
    except ValidationError as exc:
        return Inventory(), format_validation(path, exc)
    hosts: dict[str, HostSpec] = {}
    problems: list[str] = []
    for name, entry in raw.hosts.items():
        if not isinstance(entry, dict):  # checked here, so that the other hosts are checked too
            problems.append(f"{path}: hosts.{name}: expected a mapping of settings, not {entry!r}")
            continue
        settings = dict(entry)
        # The inventory format's own default: a host with an address is reached over ssh.
        transport = str(settings.pop("transport", None) or ("ssh" if "address" in settings else "local"))
        try:
            model = registry.plugin(transport).settings
        except registry.PluginError as exc:
            problems.append(f"{path}: hosts.{name}.transport: {exc}")
            continue
        numbers = number_problems(model, settings, ("hosts", name))
        if numbers:
            problems.extend(f"{path}: {p}" for p in numbers)
            continue
        try:
            hosts[name] = HostSpec(transport, model.model_validate(settings))
        except ValidationError as exc:
            problems.extend(format_validation(path, exc, ("hosts", name)))
    return (Inventory(), problems) if problems else (Inventory(hosts, raw.groups), [])


def _check_transports(hosts: dict[str, HostSpec]) -> list[str]:
    """Each transport's checks across its hosts (an ssh jump host must exist, ...)."""
    transports = {name: spec.transport for name, spec in hosts.items()}
    problems = []
    for transport in sorted(set(transports.values())):
        check = registry.plugin(transport).check_inventory
        if check is not None:
            mine = {name: spec.settings for name, spec in hosts.items() if spec.transport == transport}
            problems.extend(check(mine, transports))
    return problems


def _check_references(project: Project, inv_path: str, broken: set[str], inventory_ok: bool) -> list[str]:
    """Cross-file problems, leaving out the echoes of a file already reported as broken."""
    problems = []
    inv = project.inventory
    for group, members in inv.groups.items():
        if group in inv.hosts:
            problems.append(f"{inv_path}: groups.{group}: a host has the same name")
        for m in members:
            if m not in inv.hosts:
                problems.append(f"{inv_path}: groups.{group}: unknown host {m!r}")
    problems.extend(f"{inv_path}: {p}" for p in _check_transports(inv.hosts))
    for name, spec in project.nodes.items():
        path = project.files[name]
        for dep in spec.depends_on:
            if dep not in project.nodes:
                if dep not in broken:
                    problems.append(f"{path}: depends_on: unknown node {dep!r}")
            elif dep == name:
                problems.append(f"{path}: depends_on: {name!r} depends on itself")
        if isinstance(spec, ServiceSpec) and inventory_ok:
            if not spec.hosts or (not project.hosts_of(spec) and all(
                    r in inv.hosts or r in inv.groups for r in spec.hosts)):
                problems.append(f"{path}: hosts: service {name!r} has no hosts")
            for ref in spec.hosts:
                if ref not in inv.hosts and ref not in inv.groups:
                    problems.append(f"{path}: hosts: unknown host or group {ref!r}")
        elif isinstance(spec, DatabaseSpec):
            for dep in spec.depends_on:
                if dep in project.services:
                    problems.append(f"{path}: depends_on: a database cannot depend on service {dep!r}")
    return problems


def _node_name(path: str, text: str) -> str | None:
    try:
        data = load_yaml(text)
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict):
        return None
    return str(data.get("name") or Path(path).stem)


def merge_sources(old: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    """The manifests of two attempts at one release, as one set that still loads.

    Today's files win. An old file stays only for a node today's files no longer define (a
    service removed between attempts may still need reverting); the inventory keeps the hosts
    and groups of both, today's winning on a clash. Matching is by node name, not by path, so a
    renamed file does not define its node twice.
    """
    inv_path = f"{MANIFEST_DIR}/{INVENTORY_FILE}"
    today = {_node_name(p, t) for p, t in new.items() if p != inv_path}
    merged = dict(new)
    for path, text in old.items():
        if path == inv_path or path in new:
            continue
        name = _node_name(path, text)
        if name is not None and name not in today:
            merged[path] = text
    if inv_path in old and inv_path in new:
        try:
            before, now = load_yaml(old[inv_path]) or {}, load_yaml(new[inv_path]) or {}
        except yaml.YAMLError:
            return merged
        if isinstance(before, dict) and isinstance(now, dict):
            inv = dict(now)
            for key in ("hosts", "groups"):
                if isinstance(before.get(key), dict) or isinstance(now.get(key), dict):
                    inv[key] = {**(before.get(key) or {}), **(now.get(key) or {})}
            merged[inv_path] = yaml.safe_dump(inv, sort_keys=False)
    return merged
