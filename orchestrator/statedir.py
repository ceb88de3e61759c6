"""The tool's own files: `.release/`, the SQLite journal and the run logs, private to the operator.

The journal's copy of the manifests is executed at revert, so whoever can write the journal can
run commands as the operator: the directories are created 0700 and the files 0600 whatever the
umask, and a journal (or its directory, or `.release/`) that group or others can write is refused.
A state directory that cannot be written at all is still read by the commands that only read.
"""

from __future__ import annotations

import errno
import os
import stat
import urllib.parse
from pathlib import Path

from .errors import InputError, ReleaseError

DIR_MODE, FILE_MODE = 0o700, 0o600
NOT_PERMITTED = (errno.EACCES, errno.EPERM, errno.EROFS)


def state_dir(root: Path) -> Path:
    return Path(root) / ".release"


def make_private_dir(path: Path) -> None:
    """Create `path` and any missing parent 0700 (chmod after mkdir: the umask may mask bits
    off mkdir's mode, never add them, but 0700 must hold under any umask)."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another run made it meanwhile
            continue
        os.chmod(p, DIR_MODE)


def create_private_file(path: Path) -> None:
    """An empty file 0600, unless it exists: made before SQLite opens it, which then gives its
    -wal and -shm files the same mode."""
    make_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def open_private_append(path: Path):  # noqa: ANN201 - a text file object
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "a", encoding="utf-8")


def refuse_shared(path: Path, what: str) -> None:
    """Exit 2 when `path` is writable by group or others (a sticky directory such as /tmp, where
    others cannot replace our files, is allowed)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o022 or (stat.S_ISDIR(st.st_mode) and mode & stat.S_ISVTX):
        return
    private = DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
    raise InputError(
        f"{what} {path} is writable by group or others (mode {mode:04o}): whoever can write it can make "
        f"`release revert` run commands as you; check what it holds, then `chmod {private:o} {path}`")


def open_sqlite(path: Path, *, create: bool) -> bool:
    """Before SQLite opens a journal file: refuse one others can write, create a missing one
    private (when `create`), and say whether this process may write it. A command that writes
    (`create`) refuses a journal it cannot write with exit 2 before anything ran."""
    refuse_shared(path.parent, "the journal's directory")
    refuse_shared(path, "the journal")
    if create:
        try:
            create_private_file(path)
        except OSError as exc:
            raise unwritable(path, "journal", exc) from None
    can_write = writable(path)
    if create and not can_write:
        raise unwritable(path, "journal", PermissionError(errno.EACCES, "read-only"))
    return can_write


def read_only_uri(path: Path) -> str:
    """An SQLite URI reading a journal this process may not write. Without a -wal file, the file
    is read as it stands (immutable): that is all of it, and SQLite then needs no shared-memory
    file, which a read-only directory could not hold and a reader would leave behind read-only."""
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
    return uri if Path(f"{path}-wal").exists() else uri + "&immutable=1"


def writable(path: Path) -> bool:
    """Whether this process may write the journal file and create its -wal and -shm beside it."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def unwritable(path: Path, what: str, exc: OSError) -> ReleaseError:
    """A state file that cannot be written: permissions are the operator's to fix (exit 2, nothing
    ran); a full disk or a file-size limit is a failure (exit 1)."""
    from .writefail import WriteFailed, cause

    if exc.errno in NOT_PERMITTED:
        return InputError(f"cannot write the {what} {path}: {os.strerror(exc.errno)}; status and history still read "
                          "the journal, but apply and revert must write there")
    return WriteFailed(f"{what} write failed: {cause(exc)}: {path}")
