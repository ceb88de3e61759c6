"""Fault injection, for tests only: kill this process at a named journal boundary.

RELEASE_FAULT=BOUNDARY:NODE[@HOST_OR_REVISION][:PHASE][,...]
  BOUNDARY  before-intent | after-intent | after-command | after-outcome
  PHASE     apply (the default) | revert
e.g. RELEASE_FAULT=after-intent:orders@app1  or  RELEASE_FAULT=after-command:orders-db:revert
after-outcome fires once the outcome is durable: for an outcome held for the next journal write
(a database revision followed by another), right after the commit that carries it.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from .errors import InputError

BOUNDARIES = ("before-intent", "after-intent", "after-command", "after-outcome")


@dataclass(frozen=True)
class Fault:
    boundary: str
    node: str
    where: str | None
    phase: str


def parse(text: str | None) -> list[Fault]:
    faults = []
    for item in filter(None, (text or "").split(",")):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3) or parts[0] not in BOUNDARIES:
            raise InputError(f"RELEASE_FAULT item {item!r}: expected BOUNDARY:NODE[@HOST][:PHASE]")
        node, _, where = parts[1].partition("@")
        faults.append(Fault(parts[0], node, where or None, parts[2] if len(parts) == 3 else "apply"))
    return faults


class FaultPoints:
    def __init__(self, text: str | None = None) -> None:
        self.faults = parse(os.environ.get("RELEASE_FAULT") if text is None else text)

    def hit(self, boundary: str, phase: str, node: str, where: str | None) -> None:
        for f in self.faults:
            if f.boundary == boundary and f.phase == phase and f.node == node and f.where in (None, where):
                # SIGKILL: no cleanup, no finally blocks; exactly what a crash leaves behind.
                os.kill(os.getpid(), signal.SIGKILL)
