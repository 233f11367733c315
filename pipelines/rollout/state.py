"""A rollout's progress as the controller saves it between passes.

The controller is a reconcile loop (Ray Serve's controller checkpoints each
deployment's state the same way): every pass reads this record, advances it by
at most one transition, and saves the new record *before* acting on it. Every
action a phase stands for is safe to repeat, so a controller killed anywhere
resumes with the phase it saved and does at most the last action again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pipelines.rollout.settings import FamilyRollout

logger = logging.getLogger(__name__)


class Phase(StrEnum):
    PREFLIGHT = "preflight"  # the run exists; offline gates next
    STARTING = "starting"  # challenger replicas to start, with no traffic
    STEP = "step"  # at steps[step]: its traffic set once step_started is
    PROMOTING = "promoting"  # the registry, then serving, move to the challenger
    WITHDRAWING = "withdrawing"  # traffic withdrawn, then the registry told (``decision``)
    DONE = "done"


class Decision(StrEnum):
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    INTERRUPTED = "interrupted"  # superseded: the aliases moved under it


class Command(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    PROMOTE = "promote"


class Clock(Protocol):
    """Wall-clock seconds: what a saved step start is measured against after a restart."""

    def now(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()


@dataclass(frozen=True)
class RolloutState:
    family: str
    champion: str
    challenger: str
    run_id: str
    # The plan the rollout started with: settings changed before a restart do
    # not reshape a rollout half-way through.
    plan: dict[str, Any]
    phase: Phase
    started_at: float = 0.0  # wall clock, when the rollout's run began
    step: int = 0
    step_started: float | None = None  # wall clock; None until the step's traffic is set
    paused: bool = False
    reason: str = ""
    decision: Decision | None = None
    transitions: int = 0

    @property
    def active(self) -> bool:
        return self.phase is not Phase.DONE

    def rollout(self) -> FamilyRollout:
        return FamilyRollout.model_validate(self.plan)

    def to(self, phase: Phase, **changes: Any) -> RolloutState:
        """The next state: one transition later."""
        return replace(self, phase=phase, transitions=self.transitions + 1, **changes)

    def done(self, decision: Decision, reason: str) -> RolloutState:
        return self.to(Phase.DONE, decision=decision, reason=reason)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RolloutState:
        raw = json.loads(text)
        raw["phase"] = Phase(raw["phase"])
        raw["decision"] = None if raw["decision"] is None else Decision(raw["decision"])
        return cls(**raw)


class RolloutStore:
    """One file per family in a folder the stack owns; written whole or not at all."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, family: str) -> Path:
        return self.folder / f"{family}.json"

    def load(self, family: str) -> RolloutState | None:
        path = self.path(family)
        try:
            return RolloutState.from_json(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            # Written by rename, so only a hand edit or another version gets here:
            # keep the file for whoever looks, and start from the registry's aliases.
            kept = path.with_suffix(".unreadable")
            path.replace(kept)
            logger.error("%s: rollout state unreadable (%s); kept as %s", family, exc, kept)
            return None

    def save(self, state: RolloutState) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(state.family)
        partial = path.with_suffix(".partial")
        with partial.open("w") as out:
            out.write(state.to_json())
            out.flush()
            os.fsync(out.fileno())  # the rename below must not outrun the bytes
        partial.replace(path)
