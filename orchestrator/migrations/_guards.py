"""What scripts.py and runtime.py both put around Alembic, kept below both so neither imports
the other for it: one lock for Alembic's process-global context, no bytecode written into the
repository, and no password left in a message.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import make_url

# Alembic keeps the running EnvironmentContext in module-global proxies (`alembic.context`,
# `alembic.op`): two env.py runs in parallel threads would overwrite each other's context.
# The executor already migrates one database at a time; this lock makes that a guarantee.
_ALEMBIC_LOCK = threading.RLock()


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
