"""``gameserve rollout ...`` and ``gameserve rollback``: operators act through MLflow.

Each command only writes to the registry (an alias or a tag); the controller
in the running stack reads it and acts, so a notebook can do the same.
"""

from __future__ import annotations

import json

from pipelines.registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRegistry
from pipelines.report import table
from pipelines.rollout.controller import COMMAND_TAG, STATE_TAG
from pipelines.rollout.record import EXPERIMENT


def start(registry: ModelRegistry, family: str, version: str) -> str:
    registry.resolve_version(family, version)  # refuse a broken artifact right away
    registry.set_alias(family, CHALLENGER, version)
    return f"{family} v{version} is the challenger; the controller starts its rollout"


def command(registry: ModelRegistry, family: str, action: str) -> str:
    registry.client.set_registered_model_tag(family, COMMAND_TAG, action)
    return f"{family}: asked the controller to {action}"


def rollback(registry: ModelRegistry, family: str) -> str:
    restored = registry.rollback(family, reason="rolled back by an operator")
    return f"{family}: champion is v{restored} again; serving follows within seconds"


def set_champion(registry: ModelRegistry, family: str, version: str) -> str:
    """The way back when there is no ``previous``: any signed, loadable version."""
    registry.promote(family, version)  # verifies signature and ONNX Runtime load first
    return f"{family}: champion is v{version}; serving follows within seconds"


def status(registry: ModelRegistry, family: str) -> str:
    aliases = registry.aliases(family)
    state = registry.client.get_registered_model(family).tags.get(STATE_TAG)
    phase = json.loads(state) if state else {}
    lines = [
        table(
            ("alias", "version"),
            [(a, aliases.get(a, "-")) for a in (CHAMPION, CHALLENGER, PREVIOUS)],
        ),
        f"rollout phase: {phase.get('phase', 'none')} (challenger v{phase.get('challenger', '-')})",
    ]
    runs = registry.client.search_runs(
        [e.experiment_id for e in registry.client.search_experiments() if e.name == EXPERIMENT],
        filter_string=f"tags.`gameserve.family` = '{family}'",
        order_by=["attributes.start_time DESC"],
        max_results=5,
    )
    rows = [
        (
            r.data.tags.get("gameserve.champion"),
            r.data.tags.get("gameserve.challenger"),
            r.data.tags.get("gameserve.decision", "running"),
            r.data.tags.get("gameserve.reason", ""),
        )
        for r in runs
    ]
    if rows:
        lines.append(table(("champion", "challenger", "decision", "reason"), rows))
    return "\n".join(lines)
