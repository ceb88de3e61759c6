"""Manifest files and their YAML, read as untrusted input.

A manifest comes from a repository anyone may send a pull request to: this module reads the files
(regular files only, at most 1 MB, UTF-8), parses them with a loader that refuses what YAML allows
but a manifest must not hold (duplicate keys, deep nesting, alias bombs), and finds the values no
field may take (NUL bytes; booleans, non-finite or absurd numbers where a number is wanted).
Each problem is phrased "PATH: WHERE: what", WHERE a line, a dotted field or "(file)".
"""

from __future__ import annotations

import errno
import functools
import math
import os
import re
import stat
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_VALUES = 100_000  # after aliases are expanded
MAX_NUMBER = 1_000_000  # seconds, retries, hosts, ports: nothing legitimate comes near it


def read_manifest_files(directory: Path, prefix: str) -> tuple[dict[str, str], dict[str, str]]:
    """The texts of `directory`'s *.yaml and *.yml files, and the problems of those that cannot be
    read; both keyed by "PREFIX/NAME". A symlink to a regular file counts as that file."""
    texts: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):  # as paths sort, at a fraction of the cost
        if entry.suffix in (".yaml", ".yml"):
            path = f"{prefix}/{entry.name}"
            text, why = _read(entry)
            if why is None:
                texts[path] = text
            else:
                unreadable[path] = f"{path}: (file): {why}"
    return texts, unreadable


def _read(path: Path) -> tuple[str, str | None]:
    """The file's text, or why there is none. Skipping such an entry silently would drop the
    service it was meant to define from the release."""
    try:
        # Non-blocking: a FIFO named *.yaml must not hang validate; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        if path.is_symlink():
            kind = "symlink loop" if exc.errno == errno.ELOOP else f"broken symlink (to {os.readlink(path)})"
            return "", kind
        return "", f"cannot be read: {exc.strerror}"
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            return "", "a directory, not a manifest file"
        if not stat.S_ISREG(info.st_mode):
            return "", "not a regular file"
        # Measured before anything is parsed, and read no further than the limit.
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = b"" if info.st_size > MAX_BYTES else fh.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    if info.st_size > MAX_BYTES or len(data) > MAX_BYTES:
        return "", f"{max(info.st_size, len(data))} bytes, larger than 1 MB: not a manifest"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return "", f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"


class Refused(yaml.MarkedYAMLError):
    """Well-formed YAML that no manifest may be; `field` is where, when a field can say it."""

    def __init__(self, problem: str, mark: yaml.Mark | None, field: str | None = None) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.field = field


class _Loader(yaml.SafeLoader):
    """YAML with plain decimal numbers only (as YAML 1.2's core schema): 010, 0x1F, 1_000 or
    1:30 stay strings exactly as written instead of becoming 8, 31, 1000 or 90.

    Composing recurses once per level: past MAX_DEPTH the document is refused rather than
    left to exhaust Python's stack. The composed document then goes through `_Checks`.
    """

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self._depth >= MAX_DEPTH:
            raise Refused(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _Checks().visit(node, ())
        return node


class _Checks:
    """One walk over a composed document, visiting each node once however many aliases name it.

    Refuses a key given twice in a mapping (the last would win silently, and a reviewer reading
    the first would approve a command that never runs), a collection that contains itself, and
    aliases that expand past MAX_DEPTH levels or MAX_VALUES values: a "billion laughs" document
    is small as text and huge as data.
    """

    def __init__(self) -> None:
        self.done: dict[int, tuple[int, int]] = {}  # node id -> (values, height), aliases expanded
        self.open: set[int] = set()

    def visit(self, node: yaml.Node, path: tuple[str, ...]) -> tuple[int, int]:
        key = id(node)
        if len(path) >= MAX_DEPTH:
            # A node's first visit is where it is written (an anchor comes before its aliases).
            how = " (through aliases)" if key in self.done or key in self.open else ""
            raise Refused(f"nested more than {MAX_DEPTH} levels deep{how}", node.start_mark)
        if key in self.open:
            raise Refused("an alias refers to the collection it is in", node.start_mark, ".".join(path) or None)
        if key not in self.done:
            self.open.add(key)
            values, height = 1, 1
            for child, where in self._children(node, path):
                v, h = self.visit(child, where)
                values, height = values + v, max(height, h + 1)
            self.open.discard(key)
            if values > MAX_VALUES:
                raise Refused(f"more than {MAX_VALUES} values once its aliases are expanded", node.start_mark)
            self.done[key] = (values, height)
        values, height = self.done[key]
        if len(path) + height > MAX_DEPTH:
            raise Refused(f"nested more than {MAX_DEPTH} levels deep (through aliases)", node.start_mark)
        return values, height

    @staticmethod
    def _children(node: yaml.Node, path: tuple[str, ...]) -> list[tuple[yaml.Node, tuple[str, ...]]]:
        if isinstance(node, yaml.SequenceNode):
            return [(child, (*path, str(i))) for i, child in enumerate(node.value)]
        if not isinstance(node, yaml.MappingNode):
            return []
        out = []
        first: dict[tuple[str, str], int] = {}
        for k, v in node.value:
            name = k.value if isinstance(k, yaml.ScalarNode) else "?"
            line = k.start_mark.line + 1
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                if (k.tag, k.value) in first:
                    raise Refused(f"duplicate key on line {line} (first on line {first[k.tag, k.value]})",
                                  k.start_mark, ".".join((*path, name)))
                first[k.tag, k.value] = line
            out += [(k, (*path, name)), (v, (*path, name))]
        return out


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
    # Safe loaders only: they build no arbitrary objects.
    return yaml.load(text, Loader=_CLoader if _CLoader is not None else _Loader)


def _c_loader() -> type | None:
    """libyaml's parser and composer, ten times as fast as PyYAML's own at 10,000 manifests, with
    the same resolvers and checks. libyaml refuses more than 1,000 levels of nesting itself,
    which bounds its recursion; `_Checks` refuses more than MAX_DEPTH on the composed document."""
    if not getattr(yaml, "__with_libyaml__", False):
        return None
    from yaml.cyaml import CParser

    class CLoader(CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):  # type: ignore[misc]
        yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

        def get_single_node(self) -> yaml.Node | None:
            try:
                node = super().get_single_node()
            except yaml.MarkedYAMLError as exc:
                if "nesting depth" in str(exc.problem):
                    raise Refused(f"nested more than {MAX_DEPTH} levels deep", exc.problem_mark) from None
                raise
            if node is not None:
                _Checks().visit(node, ())
            return node

    return CLoader


_CLoader = _c_loader()


def parse_manifest(path: str, text: str) -> tuple[dict[str, Any], list[str]]:
    """One manifest's mapping, or its problems ("PATH: WHERE: what"); an empty file is {}."""
    try:
        data = load_yaml(text)
    except Refused as exc:
        return {}, [f"{path}: {exc.field or f'line {exc.problem_mark.line + 1}'}: {exc.problem}"]
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


def number_problems(model: type[BaseModel], data: dict[str, Any], within: tuple[str, ...] = ()) -> list[str]:
    """"FIELD: why" for each numeric field of `model` given a value no number should have. A
    boolean is refused although pydantic would read true as 1; inf, nan and 1e20 although they
    are floats: a timeout of .inf never fires, a retry count of 1e20 never ends."""
    out = []
    for name in _numeric_fields(model):
        if name in data:
            why = _bad_number(data[name])
            if why:
                out.append(f"{'.'.join((*within, name))}: {why}")
    return out


@functools.lru_cache(maxsize=None)
def _numeric_fields(model: type[BaseModel]) -> tuple[str, ...]:
    # Once per model, not once per manifest: reading the annotations cost more than the checks.
    return tuple(name for name, info in model.model_fields.items() if _numeric(info.annotation))


def _numeric(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        return _numeric(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_numeric(a) for a in get_args(annotation))
    return annotation in (int, float)


def _bad_number(value: Any) -> str | None:
    if isinstance(value, bool):
        return f"expected a number, not {str(value).lower()}"
    if not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)  # strings too: pydantic reads "inf" and "1e400" as numbers
    except OverflowError:
        number = math.inf
    except ValueError:
        return None  # not a number at all: the model says what it expects
    if math.isnan(number) or (math.isinf(number) and not isinstance(value, int)):
        return f"{value!r} is not a finite number"
    if abs(number) > MAX_NUMBER:
        return f"{value} is too large (at most {MAX_NUMBER})"
    return None
