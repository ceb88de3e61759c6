"""A long, realistic Alembic history written on the fly (for tests/test_history.py and the benchmark).

`write_history(dir, dialect)` writes an Alembic script directory whose revisions do what a few
years of a real schema do: tables created, renamed and dropped, columns added, renamed, altered
and dropped, indexes built and removed, empty revisions, two branches joined by a merge
revision, a data migration that reads rows through `op.get_bind()` (so it cannot be rendered
offline), and two revisions that cannot be undone (one whose downgrade raises, one whose
downgrade is `pass` after a real upgrade). Both irreversible ones only touch the table `legacy`,
which nothing else touches, so that revisions below them still downgrade after they are skipped.

The generator tracks the schema as it goes, so every revision is valid, and records for each
revision the risk warnings a plan must give for it (`Rev.risks`), with the revision that created
the table each one is about (following renames), because statements on a table created earlier in
the same migration are not risky.

SQLite gets no ALTER COLUMN (type, NOT NULL) and no ADD COLUMN NOT NULL without a default: SQLite
cannot run them outside batch mode, and batch mode cannot be rendered offline.
"""

from __future__ import annotations

import hashlib
import random
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV_PY = REPO / "migrations" / "orders" / "env.py"  # the demo's: uses a handed-over connection

# Risks that are not raised on a table created earlier in the same migration.
FRESH_SENSITIVE = {"create-index", "not-null", "alter-type", "add-not-null"}
PG_ONLY = {"create-index", "alter-type"}

TYPES = ["sa.Integer()", "sa.String(length=40)", "sa.Text()", "sa.Boolean()", "sa.DateTime()",
         "sa.Numeric(precision=10, scale=2)"]


@dataclass
class Risk:
    kind: str
    table: str  # the name in the statement
    born: int  # index of the revision that created the table (-1: before the history)
    needle: str  # text the warning message contains


@dataclass
class Rev:
    index: int
    id: str
    slug: str
    down: str | tuple[str, ...] | None
    upgrade: list[str]
    downgrade: list[str]
    role: str = "ddl"  # ddl | empty | merge | data | raises | pass | helper
    risks: list[Risk] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)

    @property
    def file(self) -> str:
        return f"{self.id}_{self.slug}.py"

    @property
    def reversible(self) -> bool:
        return self.role not in ("raises", "pass")


@dataclass
class History:
    location: Path
    dialect: str
    revisions: list[Rev]

    @property
    def head(self) -> str:
        return self.revisions[-1].id

    def __getitem__(self, index: int) -> Rev:
        return self.revisions[index]

    def by_id(self, rev: str) -> Rev:
        return next(r for r in self.revisions if r.id == rev)

    def role(self, role: str) -> list[Rev]:
        return [r for r in self.revisions if r.role == role]

    def expected_risks(self, after: int, upto: int | None = None) -> set[tuple[str, str]]:
        """(revision, kind) of every risk a plan from revision index `after` (-1: base) up to
        `upto` (default: head) must show."""
        end = len(self.revisions) - 1 if upto is None else upto
        out = set()
        for r in self.revisions[after + 1:end + 1]:
            for risk in r.risks:
                if risk.kind in PG_ONLY and self.dialect != "postgresql":
                    continue
                if risk.kind in FRESH_SENSITIVE and risk.born > after:
                    continue
                out.add((r.id, risk.kind))
            if not r.reversible:
                out.add((r.id, "irreversible"))
        return out


@dataclass
class _Table:
    name: str
    born: int
    columns: dict[str, tuple[str, bool]]  # name -> (type, nullable), in order
    indexes: dict[str, str] = field(default_factory=dict)  # index name -> column


class _Writer:
    """Walks the schema forward, one revision at a time, choosing valid operations."""

    def __init__(self, dialect: str, seed: int) -> None:
        self.pg = dialect == "postgresql"
        self.rnd = random.Random(seed)
        self.tables: dict[str, _Table] = {}
        self.counter = 0
        self.index = 0
        self.frozen: set[str] = {"legacy"}  # tables only the special revisions touch

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def pick(self, pool: list[str] | None = None) -> _Table:
        names = sorted(n for n in (pool if pool is not None else self.tables) if n not in self.frozen)
        return self.tables[self.rnd.choice(names)]

    def column_args(self, col: str, typ: str, nullable: bool, default: str | None = None) -> str:
        extra = f", server_default={default!r}" if default else ""
        return f"sa.Column({col!r}, {typ}, nullable={nullable}{extra})"

    # --------------------------------------------------------------- operations
    # Each returns (upgrade lines, downgrade lines, risks) and updates the tracked schema.

    def create_table(self) -> tuple[list[str], list[str], list[Risk]]:
        t = _Table(self.name("t"), self.index, {"id": ("sa.Integer()", False)})
        for _ in range(self.rnd.randint(1, 4)):
            t.columns[self.name("c")] = (self.rnd.choice(TYPES), True)
        self.tables[t.name] = t
        return [_create(t)], [f"op.drop_table({t.name!r})"], []

    def drop_table(self, pool: list[str] | None = None) -> tuple[list[str], list[str], list[Risk]]:
        t = self.pick(pool)
        del self.tables[t.name]
        down = [_create(t)] + [f"op.create_index({ix!r}, {t.name!r}, [{col!r}])" for ix, col in t.indexes.items()]
        return [f"op.drop_table({t.name!r})"], down, [Risk("drop-table", t.name, t.born, f"DROP TABLE {t.name}")]

    def rename_table(self, pool: list[str] | None = None) -> tuple[list[str], list[str], list[Risk]]:
        t = self.pick(pool)
        old, t.name = t.name, self.name(f"{t.name.split('_')[0]}_r")
        self.tables[t.name] = self.tables.pop(old)
        return [f"op.rename_table({old!r}, {t.name!r})"], [f"op.rename_table({t.name!r}, {old!r})"], []

    def add_column(self, pool: list[str] | None = None) -> tuple[list[str], list[str], list[Risk]]:
        t = self.pick(pool)
        col, typ = self.name("c"), self.rnd.choice(TYPES)
        style = self.rnd.choice(["null", "null", "default", "notnull"] if self.pg else ["null", "null", "default"])
        risks = []
        if style == "null":
            t.columns[col] = (typ, True)
            up = self.column_args(col, typ, True)
        elif style == "default":
            typ = "sa.String(length=20)"
            t.columns[col] = (typ, False)
            up = self.column_args(col, typ, False, "new")
        else:
            typ = "sa.Integer()"
            t.columns[col] = (typ, False)
            up = self.column_args(col, typ, False)
            risks.append(Risk("add-not-null", t.name, t.born, f"ADD COLUMN {t.name}.{col} NOT NULL"))
        return [f"op.add_column({t.name!r}, {up})"], [f"op.drop_column({t.name!r}, {col!r})"], risks

    def droppable(self, t: _Table) -> list[str]:
        return [c for c in t.columns if c != "id" and c not in t.indexes.values()]

    def drop_column(self, pool: list[str] | None = None) -> tuple[list[str], list[str], list[Risk]] | None:
        candidates = [n for n in (pool if pool is not None else self.tables)
                      if n not in self.frozen and self.droppable(self.tables[n])]
        if not candidates:
            return None
        t = self.tables[self.rnd.choice(sorted(candidates))]
        col = self.rnd.choice(self.droppable(t))
        typ, nullable = t.columns.pop(col)
        # Re-added empty on the way down, as nullable: the data is gone either way.
        down = f"op.add_column({t.name!r}, {self.column_args(col, typ, True)})"
        return ([f"op.drop_column({t.name!r}, {col!r})"], [down],
                [Risk("drop-column", t.name, t.born, f"DROP COLUMN {t.name}.{col}")])

    def rename_column(self, pool: list[str] | None = None) -> tuple[list[str], list[str], list[Risk]] | None:
        t = self.pick(pool)
        cols = [c for c in t.columns if c != "id" and c not in t.indexes.values()]
        if not cols:
            return None
        old = self.rnd.choice(cols)
        new = self.name("c")
        t.columns = {(new if c == old else c): v for c, v in t.columns.items()}
        return ([f"op.alter_column({t.name!r}, {old!r}, new_column_name={new!r})"],
                [f"op.alter_column({t.name!r}, {new!r}, new_column_name={old!r})"], [])

    def create_index(self, pool: list[str] | None = None) -> tuple[list[str], list[str], list[Risk]] | None:
        t = self.pick(pool)
        cols = [c for c in t.columns if c != "id" and c not in t.indexes.values()
                and t.columns[c][0] not in ("sa.Text()",)]
        if not cols:
            return None
        col = self.rnd.choice(cols)
        ix = self.name("ix_")
        t.indexes[ix] = col
        return ([f"op.create_index({ix!r}, {t.name!r}, [{col!r}])"],
                [f"op.drop_index({ix!r}, table_name={t.name!r})"],
                [Risk("create-index", t.name, t.born, f"CREATE INDEX {ix} ON {t.name}")])

    def drop_index(self, pool: list[str] | None = None) -> tuple[list[str], list[str], list[Risk]] | None:
        names = [n for n in (pool if pool is not None else self.tables)
                 if n not in self.frozen and self.tables[n].indexes]
        if not names:
            return None
        t = self.tables[self.rnd.choice(sorted(names))]
        ix = self.rnd.choice(sorted(t.indexes))
        col = t.indexes.pop(ix)
        return ([f"op.drop_index({ix!r}, table_name={t.name!r})"],
                [f"op.create_index({ix!r}, {t.name!r}, [{col!r}])"], [])

    def set_not_null(self, pool: list[str] | None = None) -> tuple[list[str], list[str], list[Risk]] | None:
        t = self.pick(pool)
        cols = [c for c, (_, nullable) in t.columns.items() if nullable]
        if not cols:
            return None
        col = self.rnd.choice(cols)
        typ = t.columns[col][0]
        t.columns[col] = (typ, False)
        return ([f"op.alter_column({t.name!r}, {col!r}, existing_type={typ}, nullable=False)"],
                [f"op.alter_column({t.name!r}, {col!r}, existing_type={typ}, nullable=True)"],
                [Risk("not-null", t.name, t.born, f"ALTER COLUMN {t.name}.{col} SET NOT NULL")])

    def widen(self, pool: list[str] | None = None) -> tuple[list[str], list[str], list[Risk]] | None:
        t = self.pick(pool)
        cols = [c for c, (typ, _) in t.columns.items() if typ == "sa.Integer()" and c != "id"]
        if not cols:
            return None
        col = self.rnd.choice(cols)
        t.columns[col] = ("sa.BigInteger()", t.columns[col][1])
        return ([f"op.alter_column({t.name!r}, {col!r}, existing_type=sa.Integer(), type_=sa.BigInteger())"],
                [f"op.alter_column({t.name!r}, {col!r}, existing_type=sa.BigInteger(), type_=sa.Integer())"],
                [Risk("alter-type", t.name, t.born, f"ALTER COLUMN {t.name}.{col} TYPE")])

    def random_op(self, pool: list[str] | None = None, structural: bool = True):  # noqa: ANN201
        ops = [self.add_column, self.add_column, self.create_index, self.drop_index, self.rename_column,
               self.drop_column]
        if self.pg:
            ops += [self.set_not_null, self.widen]
        if structural:
            ops += [self.create_table, self.create_table, self.rename_table]
            if len(self.tables) > 6:
                ops.append(self.drop_table)
        while True:
            op = self.rnd.choice(ops)
            got = op() if op == self.create_table else op(pool)
            if got is not None:
                return got


def _create(t: _Table) -> str:
    cols = ",\n    ".join(
        f"sa.Column({c!r}, {typ}, nullable={nullable}" + (", primary_key=True)" if c == "id" else ")")
        for c, (typ, nullable) in t.columns.items())
    return f"op.create_table(\n    {t.name!r},\n    {cols},\n)"


def _rev_id(seed: int, i: int) -> str:
    return hashlib.sha1(f"{seed}:{i}".encode()).hexdigest()[:12]


def plan_history(dialect: str, count: int = 160, seed: int = 7, helper: str | None = None) -> list[Rev]:
    """The revisions, without writing them. Fixed places (as fractions of `count`): the
    irreversible revisions at 1/4 and 3/8, the branches (7 revisions with their merge) from
    11/16, the data migration at 13/16 or right after the merge; every 9th revision is empty.
    `helper` names a module that revision 2 imports (for import-failure tests)."""
    w = _Writer(dialect, seed)
    revs: list[Rev] = []
    raise_at, pass_at = count // 4, (3 * count) // 8
    branch_at = (11 * count) // 16
    data_at = max((13 * count) // 16, branch_at + 7)
    helper_at = 2 if helper else -1

    def add(slug: str, down, up: list[str], downgrade: list[str], role: str = "ddl",  # noqa: ANN001
            risks: list[Risk] | None = None, imports: list[str] | None = None) -> Rev:
        r = Rev(len(revs), _rev_id(seed, len(revs)), slug, down, up, downgrade, role, risks or [], imports or [])
        revs.append(r)
        w.index = len(revs)
        return r

    # 0: the table that only the irreversible revisions touch, and a first ordinary table.
    legacy = _Table("legacy", 0, {"id": ("sa.Integer()", False), "note": ("sa.Text()", True),
                                  "flag": ("sa.Boolean()", True), "code": ("sa.String(length=8)", True)})
    w.tables["legacy"] = legacy
    w.index = 0
    up, down, _ = w.create_table()
    add("initial", None, [_create(legacy), *up], [*down, "op.drop_table('legacy')"])

    while len(revs) < count:
        i, parent = len(revs), revs[-1].id
        if i == raise_at:
            add("drop_legacy_note", parent, ["op.drop_column('legacy', 'note')"],
                ["raise NotImplementedError('legacy.note was dropped with its data; restore it from a backup')"],
                "raises", [Risk("drop-column", "legacy", 0, "DROP COLUMN legacy.note")])
        elif i == pass_at:
            add("drop_legacy_flag", parent, ["op.drop_column('legacy', 'flag')"], ["pass"],
                "pass", [Risk("drop-column", "legacy", 0, "DROP COLUMN legacy.flag")])
        elif i == helper_at:
            up, down, risks = w.create_table()
            add("helper_types", parent, up, down, "helper", risks, imports=[helper or ""])
        elif i == branch_at:
            _branches(w, revs, add, parent)
        elif i == data_at:
            t = w.pick()
            col = w.name("c")
            t.columns[col] = ("sa.String(length=20)", True)
            add("backfill_state", parent, [
                f"op.add_column({t.name!r}, sa.Column({col!r}, sa.String(length=20), nullable=True))",
                "bind = op.get_bind()",
                f"rows = bind.execute(sa.text('SELECT count(*) FROM {t.name}')).fetchone()[0]",
                "if rows:",
                f"    op.execute(\"UPDATE {t.name} SET {col} = 'migrated'\")",
            ], [f"op.drop_column({t.name!r}, {col!r})"], "data")
        elif i % 9 == 4:
            add("empty", parent, ["pass"], ["pass"], "empty")
        else:
            parts = [w.random_op() for _ in range(w.rnd.choice([1, 1, 2, 3]))]
            add(f"step_{i}", parent, [ln for p in parts for ln in p[0]],
                [ln for p in reversed(parts) for ln in p[1]], "ddl", [r for p in parts for r in p[2]])
    return revs


def _branches(w: _Writer, revs: list[Rev], add, parent: str) -> None:  # noqa: ANN001
    """Two branches from `parent` on disjoint tables, joined by a merge revision."""
    names = sorted(n for n in w.tables if n not in w.frozen)
    half = len(names) // 2
    pools = [names[:half], names[half:]]
    tips = []
    for b, pool in enumerate(pools):
        down = parent
        for k in range(3):
            parts = [w.random_op(pool, structural=False)]
            r = add(f"branch{'ab'[b]}_{k}", down, parts[0][0], parts[0][1], "ddl", parts[0][2])
            down = r.id
        tips.append(down)
    add("merge_branches", tuple(tips), ["pass"], ["pass"], "merge")


def render_revision(r: Rev) -> str:
    down = repr(r.down) if not isinstance(r.down, tuple) else repr(tuple(r.down))
    imports = "".join(f"from {m} import NAME_LENGTH  # noqa: F401\n" for m in r.imports)
    up = textwrap.indent("\n".join(r.upgrade), "    ")
    dn = textwrap.indent("\n".join(r.downgrade), "    ")
    return (f'"""{r.slug}\n\nRevision ID: {r.id}\nRevises: {r.down}\n"""\n'
            f"from alembic import op\nimport sqlalchemy as sa\n{imports}\n"
            f"revision = {r.id!r}\ndown_revision = {down}\nbranch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n{up}\n\n\ndef downgrade():\n{dn}\n")


def write_history(location: Path, dialect: str, count: int = 160, seed: int = 7,
                  helper: str | None = None) -> History:
    """Write the script directory (env.py, script.py.mako, versions/) and return its History."""
    revs = plan_history(dialect, count, seed, helper)
    versions = Path(location) / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (Path(location) / "env.py").write_text(ENV_PY.read_text())
    (Path(location) / "script.py.mako").write_text((ENV_PY.parent / "script.py.mako").read_text())
    for r in revs:
        (versions / r.file).write_text(render_revision(r))
    return History(Path(location), dialect, revs)
