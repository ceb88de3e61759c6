"""The SQL of each revision, as Alembic's offline mode (`--sql`) renders it; never connects.

Rendered one revision at a time, so that one revision that cannot be rendered without a database
(it reads rows through `op.get_bind()`, say) costs only its own SQL: it is named with the reason,
and the revisions after it are still rendered and checked. For speed env.py runs once for the
whole range and the output is cut at revision boundaries; after a failure it runs again from the
next revision. Alembic's output is kept as it is: what env.py writes around the migrations (a
BEGIN, a COMMIT) stays with the first and last revision of a run.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, MigrationStep

from ..errors import InputError
from ._guards import _ALEMBIC_LOCK, _no_bytecode, _scrub
from .scripts import Hop, ScriptGraph, _split


@dataclass(frozen=True)
class Rendered:
    """One revision's SQL, or why it has none (`error`)."""

    hop: Hop
    file: str
    sql: str | None
    error: str | None = None

    @property
    def revision(self) -> str:
        return self.hop.revision

    @property
    def label(self) -> str:
        return f"{self.revision} ({self.file})"


def render(graph: ScriptGraph, from_rev: str | None, to_rev: str | None) -> list[Rendered]:
    """Every hop from `from_rev` to `to_rev`, in execution order, rendered on its own.

    InputError when a script will not import (it would not run online either)."""
    hops = graph.hops(from_rev, to_rev)
    out: list[Rendered] = []
    while len(out) < len(hops):
        rest = hops[len(out):]
        chunks, error = _run(graph, rest, to_rev)
        out += [Rendered(h, graph.file(h.revision), sql) for h, sql in zip(rest, chunks)]
        if error is not None:
            if not chunks and error.startswith("env.py"):  # nothing renders: say it once per revision
                out += [Rendered(h, graph.file(h.revision), None, error) for h in rest]
            else:
                failed = rest[len(chunks)]
                out.append(Rendered(failed, graph.file(failed.revision), None, error))
    return out


def offline_sql(graph: ScriptGraph, from_rev: str | None, to_rev: str | None) -> str:
    """All of the range's SQL as one text; InputError naming the first revision that cannot be
    rendered."""
    parts = render(graph, from_rev, to_rev)
    bad = next((r for r in parts if r.sql is None), None)
    if bad is not None:
        raise InputError(f"{graph.where()}: cannot render the SQL of revision {bad.label}: {bad.error}")
    return "".join(r.sql or "" for r in parts)


def _run(graph: ScriptGraph, hops: list[Hop], to_rev: str | None) -> tuple[list[str], str | None]:
    """One env.py run over `hops`: the SQL of each revision that rendered, in order, and the
    error that stopped the run (the revision after the last one returned), if any."""
    script = graph.directory()
    buf = io.StringIO()
    marks: list[int] = []  # where each revision's SQL starts, then where the last one ended

    def steps(heads: tuple[str, ...], context: MigrationContext) -> Iterator[MigrationStep]:
        for hop in hops:
            marks.append(buf.tell())
            yield graph.step(hop)
        marks.append(buf.tell())

    error = None
    try:
        with _ALEMBIC_LOCK, _no_bytecode(), graph.on_path():
            with EnvironmentContext(
                graph.config(output_buffer=buf), script, fn=steps, as_sql=True,
                starting_rev=list(_split(hops[0].from_rev)) or None, destination_rev=to_rev,
            ):
                script.run_env()
    except ImportError as exc:
        raise InputError(graph.load_error(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any failure of a revision's code: reported, not raised
        error = f"{type(exc).__name__}: {_scrub(str(exc), graph.url)}"
        if not marks:
            error = f"env.py failed in offline mode: {error}"
        elif "get_bind" in _source_of(graph, hops[len(marks) - 1]):
            error += " (it reads the database through op.get_bind(), which offline mode cannot)"
    text = buf.getvalue()
    done = max(len(marks) - 1, 0)
    chunks = [text[marks[i]:marks[i + 1]] for i in range(done)]
    if chunks:
        chunks[0] = text[:marks[0]] + chunks[0]
        if error is None:
            chunks[-1] += text[marks[-1]:]
    return chunks, error


def _source_of(graph: ScriptGraph, hop: Hop) -> str:
    try:
        with open(graph.get(hop.revision).path) as f:
            return f.read()
    except OSError:
        return ""
