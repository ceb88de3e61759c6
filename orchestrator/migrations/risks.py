"""Risk checks on migration SQL: statements that delete data or hold long locks.

Text only: the SQL comes from the offline rendering in offline.py, and the warnings go into
the plan, so nothing here loads scripts or connects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_COMMENT_RE = re.compile(r"--[^\n]*")
_IDENT = r'(?:"[^"]+"|`[^`]+`|\[[^\]]+\]|[\w$]+)(?:\.(?:"[^"]+"|[\w$]+))?'
_CREATE_TABLE_RE = re.compile(rf"^CREATE\s+(?:TEMP\w*\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?({_IDENT})", re.I)
_DROP_TABLE_RE = re.compile(rf"^DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?({_IDENT}(?:\s*,\s*{_IDENT})*)", re.I)
_ALTER_TABLE_RE = re.compile(rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?({_IDENT})\s+(.*)$", re.I | re.S)
_RENAME_RE = re.compile(rf"^RENAME\s+TO\s+({_IDENT})", re.I)
_CREATE_INDEX_RE = re.compile(
    rf"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?:({_IDENT})\s+)?"
    rf"ON\s+(?:ONLY\s+)?({_IDENT})",
    re.I,
)
_VERSION_TABLE = "alembic_version"
_BATCH_TMP = "_alembic_tmp_"


def _unquote(name: str) -> str:
    return ".".join(part.strip('"`[]') for part in name.split("."))


def _statements(sql: str) -> list[str]:
    text = _COMMENT_RE.sub("", sql)
    return [" ".join(s.split()) for s in text.split(";") if s.strip()]


def _clauses(actions: str) -> list[str]:
    """An ALTER TABLE's comma-separated actions, ignoring commas inside parentheses."""
    out, depth, cur = [], 0, []
    for ch in actions:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [c for c in out if c]


@dataclass(frozen=True)
class Risk:
    kind: str  # drop-table | drop-column | not-null | alter-type | add-not-null | create-index
    message: str


def risks(sql: str, dialect: str) -> list[str]:
    """Warnings for destructive or long-locking statements in one piece of migration SQL."""
    return [r.message for r in RiskScan(dialect).scan(sql)]


@dataclass
class RiskScan:
    """Risk checks over the revisions of one migration, scanned in the order they run.

    Statements on a table that an earlier statement of the same migration created are not
    flagged (it is empty and unused), also when a later revision touches it and when it was
    renamed since (`ALTER TABLE x RENAME TO y`: y is the same fresh table); neither is the DROP
    TABLE of SQLite batch mode's copy-and-rename.
    """

    dialect: str
    created: set[str] = field(default_factory=set)

    def scan(self, sql: str) -> list[Risk]:
        pg = self.dialect.startswith("postgres")
        stmts = _statements(sql)
        created = self.created
        recreated: set[str] = set()
        for s in stmts:  # batch mode: CREATE _alembic_tmp_t, copy, DROP t, RENAME _alembic_tmp_t TO t
            m = _ALTER_TABLE_RE.match(s)
            if m and _unquote(m.group(1)).startswith(_BATCH_TMP):
                r = _RENAME_RE.match(m.group(2))
                if r:
                    recreated.add(_unquote(r.group(1)))

        out: list[Risk] = []
        for s in stmts:
            if m := _CREATE_TABLE_RE.match(s):
                created.add(_unquote(m.group(1)))
                continue
            if m := _DROP_TABLE_RE.match(s):
                for name in (_unquote(n.strip()) for n in m.group(1).split(",")):
                    if name != _VERSION_TABLE and name not in recreated and not name.startswith(_BATCH_TMP):
                        out.append(Risk("drop-table", f"DROP TABLE {name}: deletes the table and all of its rows"))
                        created.discard(name)
                continue
            if m := _CREATE_INDEX_RE.match(s):
                table = _unquote(m.group(3))
                if pg and not m.group(1) and table not in created:
                    index = _unquote(m.group(2)) if m.group(2) else "(unnamed)"
                    out.append(Risk("create-index", (
                        f"CREATE INDEX {index} ON {table} without CONCURRENTLY: blocks writes to "
                        f"{table} while the index is built")))
                continue
            m = _ALTER_TABLE_RE.match(s)
            if not m:
                continue
            table = _unquote(m.group(1))
            if r := _RENAME_RE.match(m.group(2)):
                new = _unquote(r.group(1))
                # A batch copy renamed over the original keeps the original's freshness.
                if not table.startswith(_BATCH_TMP) and table in created:
                    created.discard(table)
                    created.add(new)
                continue
            out += _alter_risks(table, m.group(2), fresh=table in created, pg=pg)
        return out


def _alter_risks(table: str, actions: str, *, fresh: bool, pg: bool) -> list[Risk]:
    out: list[Risk] = []
    for clause in _clauses(actions):
        up = clause.upper()
        if d := re.match(rf"DROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?({_IDENT})", clause, re.I):
            if not re.match(r"DROP\s+(CONSTRAINT|DEFAULT|NOT\s+NULL)\b", clause, re.I):
                out.append(Risk("drop-column",
                                f"DROP COLUMN {table}.{_unquote(d.group(1))}: deletes the column and its data"))
        elif a := re.match(rf"ALTER\s+(?:COLUMN\s+)?({_IDENT})\s+(.*)$", clause, re.I):
            col, rest = _unquote(a.group(1)), a.group(2).upper()
            if re.match(r"SET\s+NOT\s+NULL\b", rest) and not fresh:
                out.append(Risk("not-null", (
                    f"ALTER COLUMN {table}.{col} SET NOT NULL: scans the whole table under an "
                    "exclusive lock, and fails if any row is NULL")))
            elif pg and re.match(r"(SET\s+DATA\s+)?TYPE\b", rest) and not fresh:
                out.append(Risk("alter-type",
                                f"ALTER COLUMN {table}.{col} TYPE: may rewrite the table under an exclusive lock"))
        elif c := re.match(rf"ADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?({_IDENT})\s+(.*)$", clause, re.I):
            if up.startswith(("ADD CONSTRAINT", "ADD PRIMARY", "ADD UNIQUE", "ADD FOREIGN", "ADD CHECK")):
                continue
            rest = c.group(2).upper()
            fills = re.search(r"\bDEFAULT\b|\bIDENTITY\b|\bGENERATED\b|\bSERIAL\b", rest)
            if re.search(r"\bNOT\s+NULL\b", rest) and not fills and not fresh:
                out.append(Risk("add-not-null", (
                    f"ADD COLUMN {table}.{_unquote(c.group(1))} NOT NULL without DEFAULT: "
                    "fails on a table that has rows")))
    return out
