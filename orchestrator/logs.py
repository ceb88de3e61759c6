"""Structured logs (structlog): console lines on stderr, and one JSON object per line in the
run's `.release/logs/<release>-<time>.jsonl`. Every event carries release, node and host."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import structlog

from .secrets import mask_value
from .statedir import make_private_dir, open_private_append, refuse_shared, state_dir, unwritable
from .console import write_console
from .terminal import printable

_state: dict[str, Any] = {"file": None, "path": None, "console_level": 20, "format": "console", "view": None}
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


_second: tuple[int, str] = (0, "")
# One encoder for every event: json.dumps with `default=` builds a new one per call.
_JSON = json.JSONEncoder(default=str)


def _timestamp(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """`ts`: UTC ISO 8601 with microseconds and a Z. Formats the date and time once a second
    (structlog's own stamper builds a datetime per event, a cost every step pays twice)."""
    global _second
    now = time.time()
    sec = int(now)
    cached = _second  # read once: another thread may replace it meanwhile
    if sec != cached[0]:
        cached = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    event["ts"] = f"{cached[1]}.{int((now - sec) * 1e6):06d}Z"
    return event


def _ensure_keys(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in ("release", "node", "host"):
        event.setdefault(key, None)
    return event


def _mask(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    return mask_value(event)  # type: ignore[return-value]


def _console_line(event: dict[str, Any]) -> str:
    ts = event["ts"][11:19]
    where = event.get("node") or ""
    if event.get("host"):
        where += f"@{event['host']}"
    extras = " ".join(
        f"{k}={v}" for k, v in event.items()
        if k not in ("ts", "level", "event", "release", "node", "host") and v not in (None, "")
    )
    # One event, one line: a field's own newlines and escape sequences are shown escaped.
    return printable(f"{ts} {event['level']:<7} {event['event']:<18} {where:<24} {extras}".rstrip())


def _sink(_logger: Any, _method: str, event: dict[str, Any]) -> Any:
    fh: TextIO | None = _state["file"]
    if fh is not None:
        try:
            fh.write(_JSON.encode(event) + "\n")
            fh.flush()
        except OSError as exc:
            _log_write_failed(exc)
    view = _state["view"]
    if view is not None:
        view.handle(event)
        # The view shows progress; warnings and errors still get a line of their own above it.
        if LEVELS.get(event["level"], 20) >= max(30, _state["console_level"]):
            view.print(_console_line(event))
    elif LEVELS.get(event["level"], 20) >= _state["console_level"]:
        line = _JSON.encode(event) if _state["format"] == "json" else _console_line(event)
        write_console(sys.stderr, line + "\n")
    raise structlog.DropEvent


def _log_write_failed(exc: OSError) -> None:
    """The log file is given up (the caller's step goes on, and its outcome is journaled); the
    run under way hears of it and starts nothing more."""
    from .writefail import WriteFailed, report

    path = _state["path"]
    close_run_log()
    failed = unwritable(path, "log", exc)
    report(failed if isinstance(failed, WriteFailed) else WriteFailed(failed.message))


def configure(verbosity: int = 0, log_format: str = "console") -> None:
    _state["console_level"] = 10 if verbosity > 0 else 20
    _state["format"] = log_format
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _timestamp,
            structlog.processors.format_exc_info,
            _ensure_keys,
            _mask,
            _sink,
        ],
        cache_logger_on_first_use=False,
    )


def open_run_log(project_root: Path, release: str) -> Path:
    """Start this run's JSONL file (0600, in .release/logs 0700); closed by `close_run_log`.
    Opened before the release record is written, so that a log that cannot be written refuses
    the run instead of leaving a record behind."""
    refuse_shared(state_dir(project_root), "the state directory")
    logs = state_dir(project_root) / "logs"
    now = time.time()
    # Microseconds keep two runs in the same second apart; the action is in every event.
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    path = logs / f"{release}-{stamp}.jsonl"
    close_run_log()
    try:
        make_private_dir(logs)
        _state["file"] = open_private_append(path)
    except OSError as exc:
        raise unwritable(path, "log", exc) from None
    _state["path"] = path
    return path


def close_run_log() -> None:
    fh = _state["file"]
    _state["file"] = None
    if fh is not None:
        try:
            fh.close()
        except OSError:  # its last lines could not be written: already reported by the sink
            pass


def attach_view(view: Any) -> None:
    """Route events to a live terminal view (None detaches it)."""
    _state["view"] = view


def log_format() -> str:
    return _state["format"]


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger().bind(**bound)


configure()
