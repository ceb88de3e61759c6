"""What the modules of this package all put around Alembic, kept below them so none imports
another for it: one lock and one worker thread for Alembic's process-global context, no bytecode
written into the repository, the manifest's `python_path` on sys.path while scripts load, and no
password left in a message.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import make_url

# Alembic keeps the running EnvironmentContext in module-global proxies (`alembic.context`,
# `alembic.op`): two env.py runs in parallel threads would overwrite each other's context.
# The executor already migrates one database at a time; this lock makes that a guarantee.
_ALEMBIC_LOCK = threading.RLock()

T = TypeVar("T")
_worker: ThreadPoolExecutor | None = None
_worker_guard = threading.Lock()


async def in_worker(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a blocking runner call off the event loop, on the one thread that runs Alembic.

    A single worker thread keeps migrations one at a time even before `_ALEMBIC_LOCK` is taken,
    and keeps slow DDL from stalling the loop that drives the hosts.
    """
    global _worker
    with _worker_guard:
        if _worker is None:
            _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alembic")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_worker, functools.partial(fn, *args, **kwargs))


@contextmanager
def _no_bytecode() -> Iterator[None]:
    # Loading revision scripts would write __pycache__ into the release repository (or into a
    # restored journal copy); `plan` must leave the repository as it found it.
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = before


@contextmanager
def _on_path(paths: Iterable[str]) -> Iterator[None]:
    """Alembic's `prepend_sys_path`, but undone afterwards: the tool runs in one process for
    every database, and one database's helper modules must not shadow another's."""
    added = [p for p in paths if p not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)


def _scrub(text: str, url: str) -> str:
    """Remove a URL's password from a driver's message, in every spelling it may take there."""
    try:
        password = make_url(url).password
    except Exception:
        password = None
    if password:
        for form in {str(password), quote(str(password), safe=""), quote_plus(str(password))}:
            if form:
                text = text.replace(form, "***")
    return re.sub(r"(://[^/@:\s]*:)[^@/\s]*@", r"\1***@", text)
