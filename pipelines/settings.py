"""Typed settings of the whole platform, loaded once by the CLI and passed down.

Every field can be set from the environment with the ``GAMESERVE_`` prefix and
``__`` between levels, e.g. ``GAMESERVE_TRACKING__URI=http://mlflow:5000``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.catalog import load_families
from models.errors import InvalidInputError
from models.training import TrainSettings
from pipelines.rollout.settings import RolloutSettings
from serving.settings import ServingSettings


class TrackingSettings(BaseModel):
    """Where MLflow is: a studio's own server, or one the stack starts itself."""

    uri: str | None = Field(
        default=None, description="A studio's tracking server; unset starts an embedded one."
    )
    host: str = Field(default="127.0.0.1", description="Bind address of the embedded server.")
    port: int = Field(default=5000, ge=0, le=65535, description="0 picks a free port.")
    startup_timeout_s: float = Field(default=120.0, gt=0)
    request_timeout_s: int = Field(default=10, ge=1)
    request_max_retries: int = Field(
        default=1, ge=0, description="Kept low so an outage falls back to the cache quickly."
    )


class RaySettings(BaseModel):
    """The Ray cluster the stack runs on: a local one unless an address is given."""

    address: str | None = Field(
        default=None, description="An existing cluster ('auto', 'ray://head:10001')."
    )
    dashboard_address: str | None = Field(
        default=None, description="That cluster's dashboard, e.g. http://head:8265."
    )
    num_cpus: int | None = Field(default=None, ge=1, description="Local cluster only.")
    dashboard_port: int = Field(default=8265, ge=0, le=65535)
    object_store_memory_mb: int = Field(default=512, ge=75)
    log_to_driver: bool = Field(
        default=False, description="Echo every replica's log line on the console."
    )


class Settings(BaseSettings):
    """Root settings; one instance per process, built at start."""

    # `null` turns off what None turns off (the gRPC port, the replicas' HTTP port).
    model_config = SettingsConfigDict(
        env_prefix="GAMESERVE_",
        env_nested_delimiter="__",
        extra="forbid",
        env_parse_none_str="null",
    )

    data_dir: Path = Field(default=Path(".gameserve"), description="Everything the stack writes.")
    log_level: str = "INFO"
    train: TrainSettings = Field(default_factory=TrainSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    admin_url: str | None = Field(
        default=None,
        description="A running stack's admin API, for the CLI and notebooks; unset: the "
        "stack running from this data dir.",
    )
    api_url: str | None = Field(
        default=None,
        description="A running stack's game API, for notebooks; unset: the stack running "
        "from this data dir.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="The key the CLI and notebooks send; unset: <data_dir>/admin.key.",
    )
    families_dir: Path | None = Field(
        default=None,
        description="Family spec files (*.toml, models/spec.py) served beside the built-in "
        "families; unset: <data_dir>/families.",
    )

    @property
    def family_specs_dir(self) -> Path:
        return self.families_dir or self.data_dir / "families"

    def with_families(self) -> Settings:
        """Register installed and spec-file families; these settings, carrying the specs."""
        specs = load_families(self.family_specs_dir)
        try:  # overrides given for spec families meet their declared defaults only now
            serving = self.serving.with_declared_defaults()
            rollout = self.rollout.with_declared_defaults()
        except ValidationError as exc:
            raise InvalidInputError(f"families: {exc}") from exc
        for spec in specs:  # their defaults meet the settings models now, not mid-rollout
            try:
                serving.family(spec.name)
                rollout.family(spec.name)
            except ValidationError as exc:
                raise InvalidInputError(f"family {spec.name!r}: {exc}") from exc
        serving = serving.model_copy(update={"family_specs": specs})
        return self.model_copy(update={"serving": serving, "rollout": rollout})

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def payloads_dir(self) -> Path:
        """Recorded requests (serving.payload_log), absolute: replicas run elsewhere."""
        return (self.data_dir / "payloads").resolve()

    @property
    def mlflow_dir(self) -> Path:
        return self.data_dir / "mlflow"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "model-cache"

    @property
    def mlflow_credentials_file(self) -> Path:
        """The embedded MLflow server's admin user and password; owner-only."""
        return self.data_dir / "mlflow-credentials.json"

    @property
    def signing_key_file(self) -> Path:
        """The platform's signing key (pipelines/signing.py); owner-only."""
        return self.data_dir / "signing.key"
