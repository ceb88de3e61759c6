"""Text that came from a command or a manifest, made safe to show on a terminal.

A deploy's stderr may hold escape sequences that recolour, retitle or clear the terminal, and with
`-v` its output could end a log line and start a forged one ("12:00:00 info release.applied").
Everything the console shows from outside goes through `printable`; the JSONL log and `--json`
keep the text exactly (JSON escapes control characters itself).
"""

from __future__ import annotations

import re

# C0, DEL and C1. Tab and newline are kept only where text is shown as lines of its own.
_IN_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_IN_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED.get(c) or f"\\x{ord(c):02x}"


def printable(text: object, *, lines: bool = False) -> str:
    """`text` with control characters written as escapes (ESC as \\x1b). With `lines`, newlines
    and tabs stay: for text shown as a block, such as an error with its list of problems."""
    return (_IN_LINES if lines else _IN_LINE).sub(_escape, str(text))
