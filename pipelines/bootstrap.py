"""First run on an empty machine: make sure every family has a champion."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from models import FAMILIES
from models.errors import ModelNotFoundError
from models.family import AnyFamily, TrainableFamily
from models.training import TrainSettings
from pipelines import progress
from pipelines.model_cache import ResolvedModel
from pipelines.registry import CHAMPION, ModelRegistry
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
    families: Iterable[AnyFamily] | None = None,
) -> list[ChampionStatus]:
    """Resolve each family's champion, training and registering one where none exists.

    A family gameserve does not train has no champion until one is registered
    and set (``gameserve champion set``); until then it is served with none.
    A champion that exists but is broken is not replaced silently: its error
    propagates, because that is an operator's decision.
    """
    statuses = []
    chosen = list(FAMILIES.values() if families is None else families)
    for number, family in enumerate(chosen, start=1):
        try:
            resolved = registry.resolve(family.name, CHAMPION)
            metrics = _logged_metrics(registry, resolved)
            statuses.append(ChampionStatus(resolved, trained_now=False, metrics=metrics))
            continue
        except ModelNotFoundError:
            if not isinstance(family, TrainableFamily):
                logger.info("%s: no champion yet; its versions are built elsewhere", family.name)
                continue
        # The first start trains every family: say what is happening, one at a time.
        logger.info(
            "%s: no champion yet; training one (%d of %d, %d samples x %d epochs)",
            family.name,
            number,
            len(chosen),
            settings.train_samples,
            settings.epochs,
        )
        started = time.monotonic()
        with progress.training(family.name, settings.epochs) as on_epoch:
            registered = train_and_register(family, settings, registry, on_epoch=on_epoch)
        registry.promote(family.name, registered.version)
        logger.info(
            "%s: v%s trained and made champion in %.0f s (%s %.3f)",
            family.name,
            registered.version,
            time.monotonic() - started,
            family.headline_metric,
            registered.metrics.get(family.headline_metric, float("nan")),
        )
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
    return registry.version_metrics(resolved.family, resolved.version)
