"""A fourth family, declared by a spec file: served on v2, canaried and promoted.

Nothing in gameserve names it: ``families/match-outcome.toml`` declares it, the
package's gateway carries the spec to its replicas, and the versions are
built here, outside gameserve, and registered the way a notebook would.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
import torch

from models import get_family
from models.export import export_onnx
from models.family import AnyFamily
from pipelines.registry import CHALLENGER, CHAMPION, ModelRegistry
from pipelines.rollout.commands import RegistryControls
from pipelines.rollout.settings import FamilyRollout, Preflight, RolloutSettings, Thresholds
from pipelines.training import register_onnx
from serving.app.gateway import ServeGateway
from tests.auth import TestKeys
from tests.e2e.load import Load, Outcome
from tests.e2e.rollouts import LIMITS, STEPS, controlled

NAME = "match-outcome"


class _WinModel(torch.nn.Module):
    """A studio's own network: two teams' features in, softmax over the teams out."""

    def __init__(self, seed: int, base: _WinModel | None = None) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.score = torch.nn.Linear(6, 1)
        if base is not None:  # a retrained version: close to the last one
            with torch.no_grad():
                self.score.weight.copy_(base.score.weight + 0.05 * torch.randn(1, 6))
                self.score.bias.copy_(base.score.bias)

    def forward(self, teams: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.score(teams).squeeze(-1), dim=-1)


def _register(family: AnyFamily, registry: ModelRegistry, module: torch.nn.Module) -> str:
    """What the data scientist's notebook does: export, then register (signed by the stack)."""
    onnx_model = export_onnx(module, family.contract, family.example_inputs(rows=4))
    return register_onnx(
        family, onnx_model, registry, metrics={}, params={"built_by": "studio notebook"}, seed=0
    ).version


def _infer(session: requests.Session, url: str, player: str, rng: random.Random) -> Outcome:
    """One v2 request of the family for ``player``, judged."""
    teams = [[rng.random() for _ in range(6)] for _ in range(2)]
    tensor = {"name": "teams", "shape": [1, 2, 6], "datatype": "FP32", "data": teams}
    body: dict[str, Any] = {"inputs": [tensor]}
    answer = session.post(
        f"{url}/v2/models/{NAME}/infer", json=body, headers={"X-Player-Id": player}, timeout=30
    )
    if answer.status_code != 200:
        return Outcome(player, answer.status_code, None, False, answer.text[:200])
    reply = answer.json()
    (output,) = reply["outputs"]
    probabilities = np.asarray(output["data"], dtype=np.float64)
    sound = output["shape"] == [1, 2] and abs(probabilities.sum() - 1.0) <= 1e-3
    return Outcome(player, 200, reply["model_version"], sound, "" if sound else str(output))


@pytest.fixture
def family(spec_families: object, gateway: ServeGateway) -> Iterator[AnyFamily]:
    yield get_family(NAME)
    gateway.deploy({**gateway.versions, NAME: None})


def test_a_family_declared_by_a_spec_file_is_served_canaried_and_promoted(
    family: AnyFamily, registry: ModelRegistry, gateway: ServeGateway, test_keys: TestKeys
) -> None:
    assert family.contract.input("teams").shape == (None, 2, 6)
    first = _WinModel(seed=1)
    v1 = _register(family, registry, first)
    v2 = _register(family, registry, _WinModel(seed=2, base=first))

    # Its declared thresholds, with the tier's short steps and sample counts.
    thresholds = Thresholds(**{**LIMITS.model_dump(), **family.rollout_thresholds})
    settings = RolloutSettings(
        poll_interval_s=0.5,
        decision_interval_s=0.25,
        families={NAME: FamilyRollout(steps=STEPS, thresholds=thresholds, preflight=Preflight())},
    )
    with contextlib.ExitStack() as stack:
        controller = stack.enter_context(controlled(registry, gateway, settings))
        controls = RegistryControls(registry, controller)
        controls.set_champion(NAME, v1)  # what `gameserve champion set` does
        controller.run_once()  # the pass that serves a champion alias
        assert gateway.versions[NAME] == v1

        controls.start(NAME, v2)  # what `gameserve rollout start` does
        load = stack.enter_context(
            Load(gateway.url, workers=3, max_s=120, headers=test_keys.headers, call=_infer)
        )
        time.sleep(1.0)
        result = controller.run_rollout(NAME)
        time.sleep(1.0)
    versions = [outcome.version for outcome in load.snapshot()]
    print(
        f"\n{NAME}: {result.decision} ({result.reason}); {len(versions)} answers "
        f"({versions.count(v1)} v{v1}, {versions.count(v2)} v{v2}), "
        f"{len(load.failures)} failed"
    )
    assert result.decision == "promoted", result.reason
    assert load.failures == []
    assert {v1, v2} <= set(versions)  # the canary really split its traffic
    assert registry.aliases(NAME)[CHAMPION] == v2
    assert CHALLENGER not in registry.aliases(NAME)
    assert gateway.versions[NAME] == v2
    answer = requests.post(
        f"{gateway.url}/v2/models/{NAME}/infer",
        json={"inputs": [{"name": "teams", "shape": [1, 2, 6], "datatype": "FP32",
                          "data": [[0.5] * 6, [0.4] * 6]}]},
        headers=test_keys.headers,
        timeout=10,
    )  # fmt: skip
    assert answer.json()["model_version"] == v2
