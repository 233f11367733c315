"""The registry as a serving ``ModelSource``: what replicas fetch champions from.

It is named by import path in the Serve config and built inside each replica,
so it carries only plain settings and opens its MLflow client lazily there.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.registry import ModelRegistry, connect
from pipelines.settings import TrackingSettings
from serving.application import SourceSpec


class RegistryModelSource:
    def __init__(
        self, tracking_uri: str, cache_dir: str, request_timeout_s: int, request_max_retries: int
    ) -> None:
        self.tracking_uri = tracking_uri
        self.cache_dir = Path(cache_dir)
        self.tracking = TrackingSettings(
            request_timeout_s=request_timeout_s, request_max_retries=request_max_retries
        )
        self._registry: ModelRegistry | None = None

    def fetch(self, family: str, version: str) -> Path:
        if self._registry is None:
            self._registry = connect(self.tracking_uri, self.tracking, self.cache_dir)
        return self._registry.resolve_version(family, version).path


def registry_source_spec(
    tracking_uri: str, tracking: TrackingSettings, cache_dir: Path
) -> SourceSpec:
    return SourceSpec(
        import_path=f"{__name__}:RegistryModelSource",
        arguments={
            "tracking_uri": tracking_uri,
            "cache_dir": str(cache_dir.resolve()),
            "request_timeout_s": tracking.request_timeout_s,
            "request_max_retries": tracking.request_max_retries,
        },
    )
