"""stdout and stderr that survive their reader going away: a closed pipe drops output for the
rest of the process and never stops a release (the journal and the run's log file go on).
No third-party imports: the CLI sets this up before it knows which command runs."""

from __future__ import annotations

import errno
import io
import os
from typing import Any


def _gone(exc: OSError) -> bool:
    return isinstance(exc, BrokenPipeError) or exc.errno in (errno.EPIPE, errno.EBADF)


def _silence(fd: int) -> None:
    """Point a dead output fd at /dev/null: later writes, a child's inherited copy and Python's
    flush at exit all succeed and go nowhere (the Python docs' advice for SIGPIPE)."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def write_console(stream: Any, text: str) -> None:
    """Write and flush `text` to stdout or stderr. A reader that went away (a closed pipe) drops
    the output for the rest of the process and never stops the run: the journal and the run's
    log file go on."""
    try:
        stream.write(text)
        stream.flush()
    except OSError as exc:
        if not _gone(exc):
            raise
        if exc.errno == errno.EBADF:  # closed before we started: its number may be reused
            return
        try:
            _silence(stream.fileno())
        except (OSError, ValueError, AttributeError):  # not a real file: nothing left to flush
            pass


class _PipeGuard(io.RawIOBase):
    """The raw layer under a guarded stdout or stderr: once its reader has gone away, the fd is
    pointed at /dev/null and every write after that, buffered or not, is dropped."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return os.isatty(self.fd)

    def write(self, data: Any) -> int:
        try:
            return os.write(self.fd, data)
        except OSError as exc:
            if not _gone(exc):
                raise
            if exc.errno != errno.EBADF:
                _silence(self.fd)
            return len(data)


def guard_stream(stream: Any) -> Any:
    """`stream` (sys.stdout or sys.stderr) made to survive its reader going away; the stream
    itself when it is not a file descriptor (a test's capture, an embedding application's)."""
    if isinstance(getattr(getattr(stream, "buffer", None), "raw", None), _PipeGuard):
        return stream
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both
        return stream
    write_console(stream, "")  # what it still buffers goes out (or nowhere) first
    return io.TextIOWrapper(io.BufferedWriter(_PipeGuard(fd)), encoding=stream.encoding, errors=stream.errors,
                            line_buffering=True)  # a CI log shows each line as it comes
