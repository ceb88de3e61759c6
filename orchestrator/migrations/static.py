"""A script directory's revision graph, read without running any of it: what `release validate`
checks, so that validating an untrusted pull request executes none of its code.

Alembic learns a revision's `revision`, `down_revision`, `branch_labels` and `depends_on` by
importing its file, which runs whatever the file's top level does. Here each file is parsed with
`ast` and those four names must be literals assigned at the top level, as `alembic revision`
writes them. The checks and messages are those of the import-based `ScriptGraph`, which `plan`,
`apply` and `revert` still use: a file that fails only when run is found there.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

FIELDS = ("revision", "down_revision", "branch_labels", "depends_on")
_SOURCE = re.compile(r"(?!\.#|__init__).*\.py")  # the files Alembic loads from versions/
_LEGACY_ID = re.compile(r"([a-f0-9]+)\.py")  # Alembic 0.1 took the id from such a file name


@dataclass(frozen=True)
class Revision:
    id: str
    down: tuple[str, ...]
    labels: tuple[str, ...]
    depends_on: tuple[str, ...]
    file: str


def script_problems(name: str, location: Path, target: str = "head") -> list[str]:
    """Every problem of the script directory for `target`, each "database NAME: migrations DIR: ..."."""
    loc = Path(location).absolute()
    where = f"database {name}: migrations {loc}"
    for ok, why in ((loc.is_dir, "no such directory"),
                    ((loc / "env.py").is_file, "not an Alembic script directory (no env.py)"),
                    ((loc / "versions").is_dir, "not an Alembic script directory (no versions/)")):
        if not ok():
            return [f"{where}: {why}"]
    revisions, problems = read_revisions(loc / "versions")
    if problems:
        return [f"{where}: cannot load the revisions: {p}" for p in problems]
    problems = _graph_problems(revisions)
    if not problems:
        problems = _target_problems(revisions, target)
    return [f"{where}: {p}" for p in problems]


def read_revisions(versions: Path) -> tuple[list[Revision], list[str]]:
    """The revisions of a versions/ directory, from their source, and what could not be read."""
    revisions, problems = [], []
    for path in sorted(versions.iterdir()):
        if not _SOURCE.fullmatch(path.name) or path.is_dir():
            continue
        try:
            revisions.append(_read(path))
        except ValueError as exc:
            problems.append(f"{path.name}: {exc}")
    return revisions, problems


def _read(path: Path) -> Revision:
    try:
        tree = ast.parse(path.read_bytes(), filename=path.name)  # bytes: a coding cookie is honoured
    except SyntaxError as exc:
        raise ValueError(f"line {exc.lineno}: {exc.msg}") from None
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    values = _assignments(tree)
    legacy = _LEGACY_ID.fullmatch(path.name)
    if "revision" not in values and not legacy:
        raise ValueError("no `revision = '...'` at the top level")
    if "down_revision" not in values:
        raise ValueError("no `down_revision = ...` at the top level")
    rev = _literal(values, "revision") if "revision" in values else legacy.group(1)  # type: ignore[union-attr]
    if not isinstance(rev, str) or not rev:
        raise ValueError(f"revision must be a non-empty string, not {rev!r}")
    return Revision(rev, *(_names(_literal(values, f), f) for f in FIELDS[1:]), file=path.name)


def _assignments(tree: ast.Module) -> dict[str, ast.expr]:
    """The value each of FIELDS is given by a plain top-level `NAME = ...` (the last one, as on
    import). Set any other way (in an `if`, by unpacking, `+=`), it is refused: only running the
    file would tell its value."""
    values: dict[str, ast.expr] = {}
    plain: set[int] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            pairs = [(t, stmt.value) for t in stmt.targets]
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            pairs = [(stmt.target, stmt.value)]
        else:
            continue
        for target, value in pairs:
            if isinstance(target, ast.Name) and target.id in FIELDS:
                values[target.id] = value
                plain.add(id(target))
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for n in ast.walk(stmt):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id in FIELDS and id(n) not in plain:
                raise ValueError(f"line {n.lineno}: {n.id} is set in a way that only running the file shows; "
                                 f"write it as {n.id} = <literal> at the top level")
    return values


def _literal(values: dict[str, ast.expr], field: str) -> object:
    node = values.get(field)
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(f"line {node.lineno}: {field} is not a literal (a string, a tuple or list of "
                         "strings, or None); validate reads it without running the file") from None


def _names(value: object, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{field} must be a string, a tuple or list of strings, or None, not {value!r}")


def _graph_problems(revisions: list[Revision]) -> list[str]:
    """Duplicate ids or labels, references to nothing, cycles: what Alembic's revision map refuses
    or, for a duplicate id, silently resolves by keeping one of the files."""
    problems = []
    by_id: dict[str, Revision] = {}
    for r in revisions:
        if r.id in by_id:
            problems.append(f"revision {r.id!r} is defined more than once ({by_id[r.id].file}, {r.file})")
        by_id.setdefault(r.id, r)
    labels = _labels(revisions, problems)
    for r in revisions:
        for field, refs in (("down_revision", r.down), ("depends_on", r.depends_on)):
            problems += [f"cannot load the revisions: {r.file}: {field} {ref!r} is not a revision of these "
                         "scripts" for ref in refs if ref not in by_id and ref not in labels]
    if problems:
        return problems
    parents = {r.id: {labels.get(d, d) for d in r.down} for r in by_id.values()}
    while parents:
        ready = [r for r, ds in parents.items() if not ds & parents.keys()]
        if not ready:
            return [f"revisions form a cycle: {', '.join(sorted(parents))}"]
        for r in ready:
            del parents[r]
    return []


def _labels(revisions: list[Revision], problems: list[str]) -> dict[str, str]:
    """Branch label -> the revision that declares it."""
    ids = {r.id for r in revisions}
    labels: dict[str, str] = {}
    for r in revisions:
        for label in r.labels:
            if label in labels or label in ids:
                problems.append(f"branch label {label!r} of revision {r.id} is already used by "
                                f"{labels.get(label, label)}")
            labels.setdefault(label, r.id)
    return labels


def heads(revisions: list[Revision]) -> list[str]:
    """Revisions that no other revision names as its down_revision, sorted."""
    labels = {label: r.id for r in revisions for label in r.labels}
    parents = {labels.get(d, d) for r in revisions for d in r.down}
    return sorted({r.id for r in revisions} - parents)


def _target_problems(revisions: list[Revision], target: str) -> list[str]:
    if not revisions:
        return ["the script directory has no revisions"]
    tops = heads(revisions)
    if target in ("head", "heads"):
        if len(tops) > 1:
            return [f"multiple heads ({', '.join(tops)}); merge them (alembic merge) or set `target` to one revision"]
        return []
    if target == "base":
        return []
    names = {r.id for r in revisions} | {label for r in revisions for label in r.labels}
    branch, _, symbol = target.partition("@")
    if symbol:  # "label@head": a branch's own head, as Alembic reads it
        if branch in names and symbol in ("head", "heads", "base"):
            return []
        return [f"target: unknown revision {target!r}"]
    # As Alembic: an exact id or label, else the one id or label of more than 3 characters it begins.
    matches = [target] if target in names else sorted(n for n in names if len(n) > 3 and n.startswith(target))
    if len(matches) > 1:
        return [f"target: {target!r} is the beginning of several revisions: {', '.join(matches)}"]
    return [] if matches else [f"target: unknown revision {target!r}"]
