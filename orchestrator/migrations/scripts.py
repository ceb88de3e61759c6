"""One database's revision scripts, with no database: Alembic's `script/` side.

Loads the ScriptDirectory and walks its revision graph: what a `target` means, the single-
revision hops from one revision to another, whether a revision can be undone, and why a script
will not load. Nothing here connects: offline.py renders the hops' SQL, runtime.py runs them.
"""

from __future__ import annotations

import ast
import traceback
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alembic.config import Config
from alembic.runtime.migration import MigrationStep, RevisionStep
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionMap
from alembic.util import CommandError

from ..errors import InputError
from ._guards import _ALEMBIC_LOCK, _no_bytecode, _on_path
from .archive import revision_id

Direction = Literal["up", "down"]


@dataclass(frozen=True)
class Hop:
    """One revision applied (`direction` "up") or undone ("down").

    `from_rev`/`to_rev` are the database's revision before and after the hop (None = base;
    a merge revision's several parents are joined with ",").
    """

    from_rev: str | None
    to_rev: str | None
    revision: str
    direction: Direction


class _SkipStep(RevisionStep):
    """A revision's downgrade as Alembic keeps the books for it (version table, branches, merges)
    without running its code: how `revert --force` goes down past a revision it cannot undo."""

    def __init__(self, revision_map: RevisionMap, revision: Script) -> None:
        self.revision_map = revision_map
        self.revision = revision
        self.is_upgrade = False
        self.migration_fn = _nothing


def _nothing(**_: object) -> None:
    return None


class ScriptGraph:
    """The revisions of one database node's script directory, loaded once and then read.

    `shown` is the directory as the user knows it (`migrations/orders`, or "the journal's copy
    of migrations/orders" for a revert), never a temporary path; `python_path` is prepended to
    sys.path while scripts load and run, as Alembic's `prepend_sys_path` does.
    """

    def __init__(self, name: str, url: str, location: Path, *, shown: str | None = None,
                 python_path: Sequence[Path | str] = ()) -> None:
        self.name = name
        self.url = url  # offline rendering takes the SQL dialect from it; nothing connects
        self.location = Path(location).absolute()
        self.shown = shown or f"migrations {self.location}"
        self.python_path = [str(Path(p).absolute()) for p in python_path]
        self._directory: ScriptDirectory | None = None

    def where(self) -> str:
        """The prefix of every message about these scripts."""
        return f"database {self.name}: {self.shown}"

    def on_path(self):  # noqa: ANN201 - a context manager
        return _on_path(self.python_path)

    def config(self, **kwargs: object) -> Config:
        """A programmatic Alembic configuration (no alembic.ini) for these scripts and URL."""
        cfg = Config(**kwargs)  # type: ignore[arg-type]
        cfg.set_main_option("script_location", str(self.location))
        cfg.set_main_option("path_separator", "os")
        # ConfigParser interpolates "%": a URL-encoded password would otherwise break it.
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def directory(self) -> ScriptDirectory:
        """The loaded ScriptDirectory; InputError when it is missing or a revision fails to load."""
        if self._directory is None:
            loc = self.location
            if not loc.is_dir():
                raise InputError(f"{self.where()}: no such directory")
            if not (loc / "env.py").is_file():
                raise InputError(f"{self.where()}: not an Alembic script directory (no env.py)")
            if not (loc / "versions").is_dir():
                raise InputError(f"{self.where()}: not an Alembic script directory (no versions/)")
            try:
                with _ALEMBIC_LOCK, _no_bytecode(), self.on_path():
                    self._directory = _load(self)
            except InputError:
                raise
            except Exception as exc:
                raise InputError(self.load_error(exc)) from None
        return self._directory

    def load_error(self, exc: BaseException) -> str:
        """Why a script would not load, naming the file (and its revision) as the user knows it
        and, for a missing module, what to do about it; never the traceback."""
        path = _failing_file(exc, self.location)
        label = "a script"
        if path is not None:
            try:
                rev = revision_id(path.read_text())
            except OSError:
                rev = None
            label = f"revision {rev} ({path.name})" if rev else path.name
        if isinstance(exc, ImportError):
            return (f"{self.where()}: {label} cannot be imported: {exc} ({type(exc).__name__}). Make the "
                    "module importable: list its directory under `python_path:` in the database's "
                    "manifest (relative to the project), or set PYTHONPATH")
        return f"{self.where()}: cannot load the revisions: {label}: {type(exc).__name__}: {exc}"

    def get(self, revision: str) -> Script:
        """The script of exactly this revision id (no prefixes or symbols), else InputError."""
        script = self.directory()
        try:
            rev = script.get_revision(revision)
        except CommandError:
            rev = None
        if rev is None or rev.revision != revision:
            raise InputError(f"{self.where()}: unknown revision {revision!r}")
        return rev

    def known(self, revision: str) -> bool:
        """Whether `get(revision)` would succeed."""
        try:
            rev = self.directory().get_revision(revision)
        except CommandError:
            return False
        return rev is not None and rev.revision == revision

    def _require_known(self, revisions: Iterable[str]) -> None:
        unknown = [r for r in revisions if not self.known(r)]
        if unknown:
            raise InputError(
                f"{self.where()}: unknown revision{'s' if len(unknown) > 1 else ''} "
                + ", ".join(repr(r) for r in unknown)
                + " (the database or target names revisions these scripts do not have)"
            )

    def downs(self, revision: str) -> tuple[str, ...]:
        """The revision's parents: none for a root, several for a merge."""
        down = self.get(revision).down_revision
        if down is None:
            return ()
        return (down,) if isinstance(down, str) else tuple(down)

    def closure(self, revisions: Iterable[str]) -> set[str]:
        """The revisions and all their ancestors: what a database at those heads has applied."""
        seen: set[str] = set()
        stack = list(revisions)
        while stack:
            rev = stack.pop()
            if rev not in seen:
                seen.add(rev)
                stack.extend(self.downs(rev))
        return seen

    def _topological(self, revisions: set[str]) -> list[str]:
        """Parents before children; ties by id so that the order is stable."""
        order: list[str] = []
        pending = {r: {d for d in self.downs(r) if d in revisions} for r in revisions}
        while pending:
            ready = sorted(r for r, deps in pending.items() if not deps)
            if not ready:
                raise InputError(f"{self.where()}: revisions form a cycle: {', '.join(sorted(pending))}")
            for r in ready:
                del pending[r]
                for deps in pending.values():
                    deps.discard(r)
            order.extend(ready)
        return order

    def check_scripts(self, target: str = "head") -> None:
        """Raise InputError unless this is a loadable Alembic script directory for `target`."""
        script = self.directory()
        heads = script.get_heads()
        if not heads:
            raise InputError(f"{self.where()}: the script directory has no revisions")
        self.resolve_target(target)

    def resolve_target(self, target: str = "head") -> str | None:
        """The revision id a manifest's `target` means; None for `base`."""
        script = self.directory()
        if target in ("head", "heads"):
            heads = script.get_heads()
            if len(heads) > 1:
                raise InputError(
                    f"{self.where()}: multiple heads ({', '.join(sorted(heads))}); merge them "
                    "(alembic merge) or set `target` to one revision"
                )
            if not heads:
                raise InputError(f"{self.where()}: the script directory has no revisions")
            return heads[0]
        if target == "base":
            return None
        try:
            rev = script.get_revision(target)
        except CommandError as exc:
            raise InputError(f"{self.where()}: target: unknown revision {target!r} ({exc})") from exc
        if rev is None:
            raise InputError(f"{self.where()}: target: unknown revision {target!r}")
        return rev.revision

    def hops(self, from_rev: str | None, to_rev: str | None) -> list[Hop]:
        """The single-revision steps from `from_rev` to `to_rev` (None = base), in execution order.

        Undoes what `from_rev` has and `to_rev` lacks (newest first), then applies what
        `to_rev` has and `from_rev` lacks (oldest first); on one line of history one of the
        two is empty.
        """
        start = _split(from_rev)
        goal = _split(to_rev)
        self._require_known([*start, *goal])
        have = self.closure(start)
        want = self.closure(goal)
        out: list[Hop] = []
        for rev in reversed(self._topological(have - want)):
            out.append(Hop(rev, _join(self.downs(rev)), rev, "down"))
        for rev in self._topological(want - have):
            out.append(Hop(_join(self.downs(rev)), rev, rev, "up"))
        return out

    def step(self, hop: Hop, *, skip: bool = False) -> MigrationStep:
        """The hop as the one step Alembic runs, online or offline; `skip`: a downgrade that moves
        the version table past the revision without running its code."""
        revision_map = self.directory().revision_map
        script = self.get(hop.revision)
        if skip:
            assert hop.direction == "down", "only a downgrade can be skipped"
            return _SkipStep(revision_map, script)
        if hop.direction == "up":
            return MigrationStep.upgrade_from_script(revision_map, script)
        return MigrationStep.downgrade_from_script(revision_map, script)

    def file(self, revision: str) -> str:
        """The revision's file name, as messages name it next to the id."""
        return Path(self.get(revision).path).name

    def label(self, revision: str) -> str:
        return f"{revision} ({self.file(revision)})"

    def irreversible(self, revision: str) -> str | None:
        """Why the revision cannot be undone, or None when its downgrade() can run and undo it.

        Irreversible: downgrade() is missing; or it raises (a `raise` among its top-level
        statements); or it does nothing (`pass`, `...`, a docstring) while upgrade() does
        something. A revision whose upgrade() and downgrade() both do nothing (a merge point, a
        placeholder) is reversible. Static: the source is parsed, never run, so a plan can tell
        before anything runs; a raise inside an `if`, or a downgrade that does the wrong thing,
        is not seen.
        """
        path = Path(self.get(revision).path)
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except (OSError, SyntaxError):
            return "its source cannot be parsed"
        up = _body(tree, "upgrade")
        down = _body(tree, "downgrade")
        if down is None:
            return "it has no downgrade()"
        if any(isinstance(s, ast.Raise) for s in down):
            return "its downgrade() raises"
        if not down and up != []:
            return "its downgrade() does nothing while its upgrade() changes the schema"
        return None

    def is_reversible(self, revision: str) -> bool:
        return self.irreversible(revision) is None


# ------------------------------------------------------------------------------ helpers


def _split(rev: str | None) -> tuple[str, ...]:
    if not rev:
        return ()
    return tuple(r.strip() for r in rev.split(",") if r.strip())


def _join(revs: tuple[str, ...]) -> str | None:
    return ",".join(revs) if revs else None


# Loaded script directories, reused while none of their files changed: one apply builds a runner
# for the checks, one for the plan and one for the migration, and loading a long history (every
# revision module) each time would cost more than the plan itself.
_LOADED: OrderedDict[tuple[str, ...], tuple[tuple[tuple[str, int, int], ...], ScriptDirectory]] = OrderedDict()
_LOADED_MAX = 8


def _load(graph: ScriptGraph) -> ScriptDirectory:
    loc = graph.location
    key = (str(loc), *graph.python_path)
    stamp = tuple((str(p), st.st_mtime_ns, st.st_size) for p in [loc / "env.py", *sorted(loc.glob("versions/**/*.py"))]
                  if (st := p.stat()))
    cached = _LOADED.get(key)
    if cached is not None and cached[0] == stamp:
        _LOADED.move_to_end(key)
        return cached[1]
    script = ScriptDirectory.from_config(graph.config())
    script.get_heads()  # loads every revision file: surface their errors now
    _LOADED[key] = (stamp, script)
    while len(_LOADED) > _LOADED_MAX:
        _LOADED.popitem(last=False)
    return script


def _failing_file(exc: BaseException, location: Path) -> Path | None:
    """The script under `location` that raised: the innermost traceback frame in it, or the
    file a SyntaxError names."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return Path(exc.filename)
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        p = Path(frame.filename)
        if p.is_relative_to(location) and p.suffix == ".py":
            found = p
    return found


def _body(tree: ast.Module, name: str) -> list[ast.stmt] | None:
    """A module-level function's statements that do something, or None when it is missing."""
    func = None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            func = node  # a later definition wins, as at import time
    if func is None:
        return None
    body = list(func.body)
    if body and _is_docstring(body[0]):
        body = body[1:]
    return [s for s in body if not _is_noop(s)]


def _is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _is_noop(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Pass):
        return True
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)  # `...`, stray strings
