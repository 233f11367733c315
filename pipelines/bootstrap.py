"""First run on an empty machine: make sure every family has a champion."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from models import FAMILIES
from models.errors import ModelNotFoundError
from models.family import ModelFamily, TrainableFamily
from models.training import TrainSettings
from pipelines.registry import CHAMPION, ModelRegistry, ResolvedModel
from pipelines.training import train_and_register

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChampionStatus:
    resolved: ResolvedModel
    trained_now: bool
    metrics: dict[str, float]


def ensure_champions(
    registry: ModelRegistry,
    settings: TrainSettings,
    families: Iterable[ModelFamily] | None = None,
) -> list[ChampionStatus]:
    """Resolve each family's champion, training and registering one where none exists.

    A family gameserve does not train has no champion until one is registered
    and set (``gameserve champion set``); until then it is served with none.
    A champion that exists but is broken is not replaced silently: its error
    propagates, because that is an operator's decision.
    """
    statuses = []
    for family in FAMILIES.values() if families is None else families:
        try:
            resolved = registry.resolve(family.name, CHAMPION)
            metrics = _logged_metrics(registry, resolved)
            statuses.append(ChampionStatus(resolved, trained_now=False, metrics=metrics))
            continue
        except ModelNotFoundError:
            if not isinstance(family, TrainableFamily):
                logger.info("%s: no champion yet; its versions are built elsewhere", family.name)
                continue
            logger.info("%s: no champion yet; training one", family.name)
        registered = train_and_register(family, settings, registry)
        registry.promote(family.name, registered.version)
        statuses.append(
            ChampionStatus(
                registry.resolve(family.name, CHAMPION),
                trained_now=True,
                metrics=registered.metrics,
            )
        )
    return statuses


def _logged_metrics(registry: ModelRegistry, resolved: ResolvedModel) -> dict[str, float]:
    if resolved.source != "registry":
        return {}
    version = registry.client.get_model_version(resolved.family, resolved.version)
    if not version.run_id:
        return {}
    return dict(registry.client.get_run(version.run_id).data.metrics)
