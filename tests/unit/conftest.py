from __future__ import annotations

import pytest

from models import trainable_families
from models.build import ModelBuild, build
from models.training import TrainSettings


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests must not start Ray: that is what the ray tier is for."""
    import ray

    def refuse(*_: object, **__: object) -> None:
        raise RuntimeError("unit tests must not call ray.init")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture(scope="session")
def builds() -> dict[str, ModelBuild]:
    """Every family trained from scratch, exported and evaluated, once per session."""
    settings = TrainSettings()
    return {name: build(family, settings) for name, family in trainable_families().items()}
