"""The Ray Serve application graph, bound from the plan: the ingress, and a deployment per family
not served in it."""

from __future__ import annotations

from typing import Any

from serving.app.ingress import Ingress
from serving.app.plan import AppPlan
from serving.app.replica import FamilyModel
from serving.dataplane.model_source import ModelSource
from serving.settings import ServingSettings


def build_application(
    settings: ServingSettings, plan: AppPlan, source: ModelSource, family_model: Any = FamilyModel
) -> Any:
    """Ray Serve deployments bound from ``plan`` (the config's deployments override its state).

    ``family_model``: the deployment that runs a family's model; benchmarks and cluster
    tests give one that emulates an accelerator (tests/cluster/emulated_accelerator.py).
    """
    models: dict[str, Any] = {}
    challengers: dict[str, Any] = {}
    # Families declared by spec files travel with the app: each replica registers them.
    specs = [spec.model_dump() for spec in settings.family_specs]
    for deployment in plan.families:
        assert deployment.family is not None
        threads = settings.family(deployment.family).intra_op_threads
        bound = family_model.options(
            name=deployment.name,
            user_config=deployment.user_config,
            **deployment.options,
            **deployment.code_options,
        ).bind(deployment.family, source, threads, specs)
        target = models if deployment.name == deployment.family else challengers
        target[deployment.family] = bound
    ingress = plan.ingress
    return Ingress.options(
        name=ingress.name,
        user_config=ingress.user_config,
        **ingress.options,
        **ingress.code_options,
    ).bind(settings.model_dump(), models, challengers, source)
