"""`release`: a multi-service release orchestrator.

The library API mirrors the CLI (see `orchestrator.commands`)::

    from orchestrator import plan, apply, revert
    p = plan("path/to/repo", "v2.3")
    apply("path/to/repo", "v2.3")

Names are imported when first used (PEP 562), so that `release --help` and the commands that
read only the journal do not pay for Alembic, networkx and asyncssh.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {
    "commands": ("RunResult", "apply", "graph", "history", "plan", "plan_sql", "revert", "show", "status",
                 "unlock", "validate"),
    "errors": ("HostUnreachable", "InputError", "Interrupted", "JournalError", "LockHeld", "ReleaseError",
               "StepFailed"),
    "manifests": ("Project", "load_project"),
    "transports": ("CallLog", "LocalTransport", "MockTransport", "Transport", "TransportPool"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


class _Package(types.ModuleType):
    """The package itself. Its exported names win over its submodules of the same name
    (`orchestrator.plan` is the function, not `orchestrator/plan.py`), as when they were bound
    eagerly after the submodules."""

    def __getattribute__(self, name: str) -> Any:
        module = _WHERE.get(name)
        if module is None:
            return super().__getattribute__(name)
        return getattr(importlib.import_module(f"{__name__}.{module}"), name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *__all__})


sys.modules[__name__].__class__ = _Package
