"""The journal's copy of a script directory: taken before a release, merged across attempts,
written back for a revert.

A revert must undo revisions that today's repository may no longer have, so it runs them
from this copy rather than from the working tree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from ..errors import InputError


def archive(script_location: Path) -> dict[str, str]:
    """The script directory's files as {relative posix path: text}, for the journal's copy.

    env.py, script.py.mako (and any other top-level .py/.mako the env.py may import) and every
    revision under versions/; no bytecode caches.
    """
    root = Path(script_location)
    files: dict[str, str] = {}
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if p.is_file() and p.suffix in (".py", ".mako"):
            files[p.name] = p.read_text()
    versions = root / "versions"
    if versions.is_dir():
        for p in sorted(versions.rglob("*.py")):
            if "__pycache__" not in p.parts and p.is_file():
                files[p.relative_to(root).as_posix()] = p.read_text()
    return files


_REVISION_ID = re.compile(r"""^revision\s*(?::[^=]*)?=\s*['"]([^'"]+)['"]""", re.M)


def revision_id(text: str) -> str | None:
    """The `revision = "..."` a revision file declares, read without importing it."""
    m = _REVISION_ID.search(text)
    return m.group(1) if m else None


def merge_archives(old: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    """Two attempts' script directories as one: today's files win, and an old revision file stays
    only when today's files do not define the same revision id (a renamed file must not make
    Alembic see one revision twice and pick either)."""
    today = {m.group(1) for text in new.values() for m in _REVISION_ID.finditer(text)}
    merged = dict(new)
    for path, text in old.items():
        if path in new:
            continue
        ids = set(_REVISION_ID.findall(text))
        if not ids or not ids & today:
            merged[path] = text
    return merged


def scratch() -> str | None:
    """Where a revert writes its copy of the scripts: memory (/dev/shm) where there is one and
    TMPDIR does not say otherwise, else the usual temporary directory. The copy is read once and
    removed; on a busy disk creating its hundreds of small files cost a revert up to 0.2 s."""
    shm = "/dev/shm"
    if "TMPDIR" not in os.environ and os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None


def restore(files: dict[str, str], dest: Path) -> Path:
    """Write an `archive()` back under `dest` (a script directory Alembic can run) and return it."""
    dest = Path(dest)
    for rel in files:
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts or not p.parts:
            raise InputError(f"journaled migration copy: refusing unsafe path {rel!r}")
    (dest / "versions").mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        target = dest.joinpath(*PurePosixPath(rel).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return dest

