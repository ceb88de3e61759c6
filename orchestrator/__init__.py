"""`release`: a multi-service release orchestrator.

The library API mirrors the CLI (see `orchestrator.commands`)::

    from orchestrator import plan, apply, revert
    p = plan("path/to/repo", "v2.3")
    apply("path/to/repo", "v2.3")
"""

from .commands import RunResult, apply, graph, history, plan, plan_sql, revert, status, unlock, validate
from .errors import HostUnreachable, InputError, Interrupted, JournalError, LockHeld, ReleaseError, StepFailed
from .manifests import Project, load_project
from .transports import CallLog, LocalTransport, MockTransport, Transport

__all__ = [
    "CallLog", "HostUnreachable", "InputError", "Interrupted", "JournalError", "LocalTransport", "LockHeld",
    "MockTransport", "Project", "ReleaseError", "RunResult", "StepFailed", "Transport", "apply", "graph",
    "history", "load_project", "plan", "plan_sql", "revert", "status", "unlock", "validate",
]
