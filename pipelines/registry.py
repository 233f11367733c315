"""The model registry: MLflow behind the one interface serving and rollout use.

Aliases, not stages: ``champion`` serves, ``challenger`` is a rollout's
candidate, ``previous`` is the last champion, kept for rollback. Only the ONNX
file of a version is ever fetched, verified against the checksum recorded at
registration and parsed as ONNX; nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import onnx
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from models import get_family
from models.catalog import load_families
from models.errors import (
    GameserveError,
    ModelArtifactError,
    ModelNotFoundError,
    RegistryUnavailableError,
)
from models.runtime import open_verified
from pipelines.model_cache import MODEL_FILE, ModelCache, ResolvedModel, sha256_of
from pipelines.rollout.record import (
    RolloutRecord,
    recent_rollouts,
    rollout_steps,
    rollout_timeline,
)
from pipelines.settings import Settings, TrackingSettings
from pipelines.signing import VersionSigner
from pipelines.stack_state import StackState
from pipelines.tracking_server import MlflowCredentials, stack_credentials

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
TAG_SHA256 = "gameserve.onnx_sha256"
TAG_CONTRACT = "gameserve.contract"
TAG_FAMILY = "gameserve.family"
TAG_SIGNATURE = "gameserve.signature"
# On the registered model: the champion alias as the pipeline last set it, signed.
TAG_SIGNED_CHAMPION = "gameserve.signed_alias.champion"
EVENT_TAG_PREFIX = "gameserve.event."
_T = TypeVar("_T")
_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


@dataclass(frozen=True)
class VersionInfo:
    family: str
    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    created_ms: int
    tags: dict[str, str] = field(default_factory=dict)


def connect(
    tracking_uri: str,
    settings: TrackingSettings,
    cache_dir: Path,
    signer: VersionSigner,
    credentials: MlflowCredentials | None = None,
) -> ModelRegistry:
    """Point this process's MLflow client at ``tracking_uri`` and open the registry.

    MLflow's client reads its retry policy from the environment; the defaults
    retry for minutes, which would stall a fallback to the cache, so the
    settings' bounds are applied here, once, at start.
    """
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(settings.request_max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(settings.request_timeout_s)
    if credentials is not None:  # else MLflow's own variables, for a studio's server
        credentials.apply()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return ModelRegistry(tracking_uri, cache_dir, signer)


def connect_to_stack(settings: Settings) -> ModelRegistry:
    """The registry ``settings`` name, or the one of the stack running from its data dir,
    with the stack's signing key and MLflow login (both in the data dir).

    It installs the stack's families too (built-in, installed packages, the spec
    files of its families folder): a script that connects and then asks for a
    spec-file family finds it, as the stack does."""
    load_families(settings.family_specs_dir)
    state = StackState.read(settings)
    uri = settings.tracking.uri or (state.tracking_uri if state else None)
    if uri is None:
        raise RegistryUnavailableError(
            "no tracking server: run `gameserve up` or set GAMESERVE_TRACKING__URI"
        )
    signer = VersionSigner.at(settings.signing_key_file)
    credentials = stack_credentials(settings.tracking, settings.mlflow_credentials_file)
    return connect(uri, settings.tracking, settings.cache_dir, signer, credentials)


class ModelRegistry:
    """Resolve, alias and annotate model versions of the gameplay families.

    Nothing it resolves is unsigned: a version needs the platform's signature
    over its checksum and contract, a champion alias the platform's signature
    over the version it names (``pipelines/signing.py``).
    """

    def __init__(self, tracking_uri: str, cache_dir: Path, signer: VersionSigner) -> None:
        self.tracking_uri = tracking_uri
        # Private: every other module reaches MLflow through this class's verbs.
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.cache = ModelCache(cache_dir)
        self.signer = signer

    # -- resolving -------------------------------------------------------

    def resolve(self, family: str, alias: str = CHAMPION) -> ResolvedModel:
        """The verified ONNX file of the version that holds ``alias``.

        When MLflow cannot be reached, the version this alias had the last
        time it resolved here is served from the cache, with a warning.
        """
        get_family(family)
        try:
            version = self._client.get_model_version_by_alias(family, alias)
            if alias == CHAMPION:
                self.verify_champion(family, str(version.version))
        except MlflowException as exc:
            if _is_not_found(exc):
                raise ModelNotFoundError(f"{family}: no version holds the alias {alias!r}") from exc
            return self._resolve_from_cache(family, alias, exc)
        resolved = self._fetch(family, version)
        self.cache.remember_alias(family, alias, resolved.version)
        return resolved

    def resolve_version(self, family: str, version: str) -> ResolvedModel:
        """The verified ONNX file of one version, by number."""
        get_family(family)
        try:
            model_version = self._client.get_model_version(family, version)
        except MlflowException as exc:
            if _is_not_found(exc):
                raise ModelNotFoundError(f"{family}: version {version} does not exist") from exc
            cached = self._cached(family, version)
            if cached is None:
                raise _unavailable(exc) from exc
            logger.warning("MLflow unreachable (%s); using cached %s v%s", exc, family, version)
            return cached
        return self._fetch(family, model_version)

    def verify_champion(self, family: str, version: str) -> None:
        """ModelArtifactError unless the pipeline itself made ``version`` the champion."""
        signed = self._client.get_registered_model(family).tags.get(TAG_SIGNED_CHAMPION)
        if not self.signer.verifies_alias(family, CHAMPION, version, signed):
            raise ModelArtifactError(
                f"{family}: the champion alias names v{version}, but the pipeline did not "
                "put it there (no valid signature); refusing it"
            )

    def _cached(self, family: str, version: str) -> ResolvedModel | None:
        return self.cache.verified(family, version, self.signer)

    def _resolve_from_cache(self, family: str, alias: str, exc: MlflowException) -> ResolvedModel:
        remembered = self.cache.alias(family, alias)
        if remembered is None:
            raise _unavailable(exc) from exc
        version, resolved_at = remembered
        cached = self._cached(family, version)
        if cached is None:
            raise _unavailable(exc) from exc
        logger.warning(
            "MLflow at %s unreachable; serving cached %s v%s (%s as of %s)",
            self.tracking_uri,
            family,
            version,
            alias,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(resolved_at)),
        )
        return cached

    def _fetch(self, family: str, version: ModelVersion) -> ResolvedModel:
        number = str(version.version)
        expected = version.tags.get(TAG_SHA256)
        if not expected:
            raise ModelArtifactError(f"{family} v{number}: no {TAG_SHA256} tag, cannot verify it")
        contract = get_family(family).contract.fingerprint()
        if version.tags.get(TAG_CONTRACT) != contract:
            raise ModelArtifactError(
                f"{family} v{number}: tensor contract {version.tags.get(TAG_CONTRACT)} "
                f"does not match this code's {contract}"
            )
        signature = version.tags.get(TAG_SIGNATURE)
        if not self.signer.verifies_version(family, expected, contract, signature):
            raise ModelArtifactError(
                f"{family} v{number}: not signed by this platform (registered outside the "
                "pipeline, or its checksum tag was changed); refusing it"
            )
        cached = self.cache.get(family, number, expected)
        if cached is not None:
            return ResolvedModel(family, number, cached, expected, "registry")
        with tempfile.TemporaryDirectory(prefix="gameserve-fetch-") as temp:
            downloaded = self._download(family, number, Path(temp))
            actual = sha256_of(downloaded)
            if actual != expected:
                raise ModelArtifactError(
                    f"{family} v{number}: checksum mismatch (registered {expected[:12]}, "
                    f"downloaded {actual[:12]}); refusing the artifact"
                )
            _check_onnx(family, number, downloaded)
            path = self.cache.put(family, number, downloaded, expected, str(signature))
        logger.info("%s v%s fetched from MLflow into %s", family, number, path)
        return ResolvedModel(family, number, path, expected, "registry")

    def _download(self, family: str, version: str, destination: Path) -> Path:
        try:
            root = self._client.get_model_version_download_uri(family, version)
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{root.rstrip('/')}/{MODEL_FILE}",
                dst_path=str(destination),
                tracking_uri=self.tracking_uri,
            )
        except (MlflowException, OSError) as exc:
            raise ModelArtifactError(
                f"{family} v{version}: the ONNX artifact could not be downloaded: {exc}"
            ) from exc
        return Path(path)

    # -- aliases -----------------------------------------------------------

    def aliases(self, family: str) -> dict[str, str]:
        """alias → version for every alias of ``family``."""
        try:
            model = self._client.get_registered_model(family)
        except MlflowException as exc:
            raise _translate(exc, f"{family}: no registered model") from exc
        return {alias: str(version) for alias, version in model.aliases.items()}

    def set_alias(self, family: str, alias: str, version: str) -> None:
        self._call(lambda: self._client.set_registered_model_alias(family, alias, version), family)

    def _set_champion(self, family: str, version: str) -> None:
        """Sign first: a reader that sees the new alias can already verify it."""
        signed = self.signer.sign_alias(family, CHAMPION, version)
        self._call(
            lambda: self._client.set_registered_model_tag(family, TAG_SIGNED_CHAMPION, signed),
            family,
        )
        self.set_alias(family, CHAMPION, version)

    def delete_alias(self, family: str, alias: str) -> None:
        if alias in self.aliases(family):
            self._call(lambda: self._client.delete_registered_model_alias(family, alias), family)

    def promote(self, family: str, version: str) -> None:
        """Make ``version`` the champion; the old champion becomes ``previous``."""
        current = self.aliases(family)
        if current.get(CHAMPION) == version:
            return
        self.resolve_version(family, version)  # refuse a broken artifact before it serves
        if CHAMPION in current:
            self.set_alias(family, PREVIOUS, current[CHAMPION])
        self._set_champion(family, version)
        if current.get(CHALLENGER) == version:
            self.delete_alias(family, CHALLENGER)
        self.record_event(family, version, "promoted", {"replaced": current.get(CHAMPION)})

    def rollback(self, family: str, reason: str) -> str:
        """Make ``previous`` the champion again; return the restored version."""
        current = self.aliases(family)
        if PREVIOUS not in current:
            raise ModelNotFoundError(f"{family}: no previous champion to roll back to")
        restored, replaced = current[PREVIOUS], current.get(CHAMPION)
        self.resolve_version(family, restored)  # only a signed, loadable version comes back
        self._set_champion(family, restored)
        self.delete_alias(family, PREVIOUS)
        if replaced is not None:
            self.record_event(family, replaced, "rolled_back", {"reason": reason})
        return restored

    # -- versions and events -------------------------------------------------

    def list_versions(self, family: str) -> list[VersionInfo]:
        versions = self._call(
            lambda: self._client.search_model_versions(f"name='{family}'"), family
        )
        # Search results carry no aliases; the registered model has them all.
        by_version: dict[str, list[str]] = {}
        for alias, version in self.aliases(family).items():
            by_version.setdefault(version, []).append(alias)
        infos = [
            VersionInfo(
                family=family,
                version=str(v.version),
                aliases=tuple(sorted(by_version.get(str(v.version), []))),
                run_id=v.run_id,
                created_ms=int(v.creation_timestamp),
                tags=dict(v.tags),
            )
            for v in versions
        ]
        return sorted(infos, key=lambda info: int(info.version))

    def version_tags(self, family: str, version: str) -> dict[str, str]:
        return dict(
            self._call(lambda: self._client.get_model_version(family, version), family).tags
        )

    def version_metrics(self, family: str, version: str) -> dict[str, float]:
        """The figures logged with the run that built ``version``; {} without one."""
        model_version = self._call(lambda: self._client.get_model_version(family, version), family)
        run_id = model_version.run_id
        if not run_id:
            return {}
        run = self._call(lambda: self._client.get_run(run_id), family)
        return dict(run.data.metrics)

    def set_version_tag(self, family: str, version: str, key: str, value: str) -> None:
        self._call(lambda: self._client.set_model_version_tag(family, version, key, value), family)

    def family_tags(self, family: str) -> dict[str, str]:
        return dict(self._call(lambda: self._client.get_registered_model(family), family).tags)

    def set_family_tag(self, family: str, key: str, value: str) -> None:
        self._call(lambda: self._client.set_registered_model_tag(family, key, value), family)

    def delete_family_tag(self, family: str, key: str) -> None:
        self._call(lambda: self._client.delete_registered_model_tag(family, key), family)

    def rollout_record(self, family: str, champion: str, challenger: str) -> RolloutRecord:
        """A new MLflow run for one rollout, written behind (``pipelines/rollout/record.py``)."""
        return RolloutRecord.open(self._client, family, champion, challenger)

    def resume_record(self, family: str, run_id: str, started_at: float) -> RolloutRecord:
        """The run of a rollout a restarted controller carries on."""
        return RolloutRecord.resume(self._client, family, run_id, started_at)

    def recent_rollouts(self, family: str, limit: int = 5) -> list[dict[str, str]]:
        """The family's latest rollout runs, newest first."""
        return recent_rollouts(self._client, family, limit)

    def rollout_steps(self, run_id: str) -> dict[str, list[tuple[int, float]]]:
        """A rollout run's judged figures per step (champion_p99_ms, challenger_error_rate...)."""
        return rollout_steps(self._client, run_id)

    def rollout_timeline(self, run_id: str) -> list[dict[str, Any]]:
        """A rollout run's events in order: steps started and judged, commands, resumptions."""
        return rollout_timeline(self._client, run_id)

    def record_event(
        self, family: str, version: str, event: str, details: dict[str, object] | None = None
    ) -> None:
        """Append a rollout event to the version's tags, readable in the MLflow UI."""
        key = f"{EVENT_TAG_PREFIX}{time.time_ns() // 1_000_000}.{event}"
        value = json.dumps(details or {}, sort_keys=True, default=str)
        self.set_version_tag(family, version, key, value)

    def _call(self, action: Callable[[], _T], family: str) -> _T:
        try:
            return action()
        except MlflowException as exc:
            raise _translate(exc, f"{family}: not found in the registry") from exc


def _check_onnx(family: str, version: str, path: Path) -> None:
    """Before it enters the cache: parses as ONNX, and runs in ONNX Runtime."""
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx raises DecodeError, ValidationError and friends
        raise ModelArtifactError(f"{family} v{version}: not a valid ONNX model: {exc}") from exc
    spec = get_family(family)
    open_verified(
        path, spec.contract, spec.example_inputs(rows=2), label=f"{family} v{version}",
        prefer_gpu=False,
    )  # fmt: skip


def _is_not_found(exc: MlflowException) -> bool:
    return getattr(exc, "error_code", None) in _NOT_FOUND_CODES


def _unavailable(exc: MlflowException) -> RegistryUnavailableError:
    return RegistryUnavailableError(f"model registry unreachable and nothing cached: {exc}")


def _translate(exc: MlflowException, not_found: str) -> GameserveError:
    if _is_not_found(exc):
        return ModelNotFoundError(not_found)
    return RegistryUnavailableError(f"model registry request failed: {exc}")
