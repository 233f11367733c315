"""The application builder Ray Serve imports from a declarative config.

Deploying by config (``import_path`` + ``args`` + per-deployment
``user_config``) is what lets a version change reach running replicas in
place: Ray Serve applies a ``user_config``-only change through
``reconfigure`` without restarting anything. It is also the shape KubeRay's
``serveConfigV2`` takes, so the same config deploys on a production cluster.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, Field

from serving.app.graph import build_application
from serving.app.plan import plan_application
from serving.dataplane.model_source import ModelSource
from serving.settings import ServingSettings


class SourceSpec(BaseModel):
    """A model source named by import path, so configs stay plain JSON."""

    import_path: str = Field(description="module:Class implementing ModelSource")
    arguments: dict[str, Any] = Field(default_factory=dict)

    def create(self) -> ModelSource:
        module, _, name = self.import_path.partition(":")
        source: ModelSource = getattr(importlib.import_module(module), name)(**self.arguments)
        return source


class AppArgs(BaseModel):
    serving: ServingSettings = Field(default_factory=ServingSettings)
    source: SourceSpec


def app_builder(args: dict[str, Any]) -> Any:
    """Entry point named in the config's ``import_path``."""
    parsed = AppArgs.model_validate(args)
    return build_application(
        parsed.serving, plan_application(parsed.serving, {}), parsed.source.create()
    )
