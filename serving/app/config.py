"""What the application's deployments are told in place (their ``user_config``), and their names.

Plain pydantic, no Ray: the plan (``plan.py``) builds these, the gateway
writes them into the Serve config, and the replicas read them in ``reconfigure``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from serving.app.demand_forecast import ForecastSettings
from serving.dataplane.routing import Route

CHALLENGER_SUFFIX = "-challenger"
INGRESS_NAME = "ingress"


class ForecastTerms(BaseModel):
    """A family deployment's demand forecast, as its replicas hand it to the collector."""

    settings: ForecastSettings
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)


class ReplicaConfig(BaseModel):
    """The deployment's ``user_config``: changing it reconfigures replicas in place."""

    version: str | None = None
    max_batch_rows: int = Field(default=1024, ge=1)
    batch_wait_timeout_s: float = Field(default=0.002, ge=0)
    forecast: ForecastTerms | None = Field(
        default=None, description="The champion's forecast terms; None: reactive only."
    )


class IngressConfig(BaseModel):
    """The ingress ``user_config``, applied in place: rollout routes, and the
    versions of the families served in this process."""

    routes: dict[str, Route] = Field(default_factory=dict)
    champions: dict[str, str | None] = Field(default_factory=dict)
    challengers: dict[str, str] = Field(default_factory=dict)
