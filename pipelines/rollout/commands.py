"""What the admin API's rollout routes do: the stack's side of ``RolloutControls``.

Starting a rollout and moving a champion write the registry's aliases with the
stack's own MLflow credentials; the controller reconciles serving to them.
Pause, resume, abort and promote go straight to the controller running in the
same process, which applies them on its next pass. Operators and notebooks
reach these through the authenticated admin API (``serving/control/admin.py``),
never by writing MLflow themselves.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from models import FAMILIES
from models.errors import ConflictError
from pipelines.registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRegistry
from pipelines.report import table
from pipelines.rollout.record import STATE_TAG
from pipelines.rollout.state import Command as RolloutCommand
from serving.control.admin import Command


class CommandSink(Protocol):
    """Where an operator's command goes: the controller (``RolloutController.send``)."""

    def send(self, family: str, command: RolloutCommand) -> None: ...


class RegistryControls:
    """``serving.control.admin.RolloutControls`` over the registry and the controller."""

    def __init__(self, registry: ModelRegistry, controller: CommandSink | None = None) -> None:
        self.registry = registry
        self.controller = controller

    def families(self) -> list[str]:
        return sorted(FAMILIES)

    def start(self, family: str, version: str) -> str:
        # Refuse a broken, unsigned or unloadable artifact right away, not in the controller.
        self.registry.resolve_version(family, version)
        self.registry.set_alias(family, CHALLENGER, version)
        return f"{family} v{version} is the challenger; the controller starts its rollout"

    def command(self, family: str, action: Command) -> str:
        if self.controller is None:
            raise ConflictError("no rollout controller runs beside this admin API")
        self.controller.send(family, RolloutCommand(action))
        return f"{family}: asked the controller to {action}"

    def rollback(self, family: str) -> str:
        restored = self.registry.rollback(family, reason="rolled back by an operator")
        return f"{family}: champion is v{restored} again; serving follows within seconds"

    def set_champion(self, family: str, version: str) -> str:
        """The way back when there is no ``previous``: any signed, loadable version."""
        self.registry.promote(family, version)  # verifies signature and ONNX Runtime load
        return f"{family}: champion is v{version}; serving follows within seconds"

    def status(self, family: str) -> dict[str, Any]:
        aliases = self.registry.aliases(family)
        state = self.registry.family_tags(family).get(STATE_TAG)
        return {
            "family": family,
            "aliases": {a: aliases.get(a) for a in (CHAMPION, CHALLENGER, PREVIOUS)},
            "rollout": json.loads(state) if state else None,
            "recent": self.registry.recent_rollouts(family, limit=5),
        }


def describe(status: dict[str, Any]) -> str:
    """``status`` as the CLI prints it."""
    aliases: dict[str, str | None] = status["aliases"]
    phase = status["rollout"] or {}
    lines = [
        table(("alias", "version"), [(a, v or "-") for a, v in aliases.items()]),
        f"rollout phase: {phase.get('phase', 'none')} (challenger v{phase.get('challenger', '-')})",
    ]
    if status["recent"]:
        keys = ("champion", "challenger", "decision", "reason")
        lines.append(table(keys, [tuple(run[k] for k in keys) for run in status["recent"]]))
    return "\n".join(lines)
