"""The registry as a serving ``ModelSource``: what replicas fetch champions from.

It is named by import path in the Serve config and built inside each replica,
so it carries only plain settings. A replica needs artifacts, not the tracking
client: a version already in the model cache and signed by this platform is
loaded from there, and MLflow's client is imported only on a miss (a node that
has not seen the version). On one machine the stack has always resolved the
version into the cache before any replica asks, so replicas never import MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.model_cache import ModelCache
from pipelines.settings import TrackingSettings
from pipelines.signing import VersionSigner
from pipelines.tracking_server import MlflowCredentials
from serving.app.builder import SourceSpec

if TYPE_CHECKING:
    from pipelines.registry import ModelRegistry


class RegistryModelSource:
    def __init__(
        self,
        tracking_uri: str,
        cache_dir: str,
        request_timeout_s: int,
        request_max_retries: int,
        signing_key: str,
        credentials_file: str | None = None,
        tracking_uri_env: str | None = None,
    ) -> None:
        # On Kubernetes the address comes from a ConfigMap, as an environment variable
        # of the replica's pod: read where the replica runs, not where the config is made.
        self.tracking_uri = tracking_uri
        self.tracking_uri_env = tracking_uri_env
        self.cache_dir = Path(cache_dir)
        # Paths only: the key and the password stay in their owner-only files.
        self.signing_key = Path(signing_key)
        self.credentials_file = None if credentials_file is None else Path(credentials_file)
        self.tracking = TrackingSettings(
            request_timeout_s=request_timeout_s, request_max_retries=request_max_retries
        )
        self._registry: ModelRegistry | None = None

    def fetch(self, family: str, version: str) -> Path:
        signer = VersionSigner.at(self.signing_key)
        cached = ModelCache(self.cache_dir).verified(family, version, signer)
        if cached is not None:
            return cached.path
        if self._registry is None:
            from pipelines.registry import connect  # MLflow's client, on a miss only

            credentials = (
                None
                if self.credentials_file is None
                else MlflowCredentials.at(self.credentials_file)
            )
            uri = self.tracking_uri
            if self.tracking_uri_env:
                uri = os.environ.get(self.tracking_uri_env) or uri
            self._registry = connect(uri, self.tracking, self.cache_dir, signer, credentials)
        return self._registry.resolve_version(family, version).path


def registry_source_spec(
    tracking_uri: str,
    tracking: TrackingSettings,
    cache_dir: Path,
    signing_key: Path,
    credentials_file: Path | None = None,
) -> SourceSpec:
    return SourceSpec(
        import_path=f"{__name__}:RegistryModelSource",
        arguments={
            "tracking_uri": tracking_uri,
            "cache_dir": str(cache_dir.resolve()),
            "request_timeout_s": tracking.request_timeout_s,
            "request_max_retries": tracking.request_max_retries,
            "signing_key": str(signing_key.resolve()),
            "credentials_file": None
            if credentials_file is None
            else str(credentials_file.resolve()),
        },
    )
