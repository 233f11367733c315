"""Marks each test with its tier, taken from the folder it lives in."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from models import trainable_family
from tests.auth import TestKeys

if TYPE_CHECKING:
    from serving.runtime.substrate import ServeRuntime

TIERS = ("unit", "asgi", "ray", "mlflow", "e2e", "cluster")


def _tier(item: pytest.Item) -> str:
    return item.path.relative_to(Path(__file__).parent).parts[0]


# The tiers that start no Ray run in one pytest-xdist worker, beside the tiers that
# share the session's Ray in the other: one Ray per session, and the whole suite in
# the time of its Ray half.
WITHOUT_RAY = ("unit", "asgi", "mlflow")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _tier(item) in TIERS:
            item.add_marker(getattr(pytest.mark, _tier(item)))
        group = "without-ray" if _tier(item) in WITHOUT_RAY else "ray"
        item.add_marker(pytest.mark.xdist_group(group))
    # The cluster tier stops every Ray on the machine, so it runs last.
    items.sort(key=lambda item: _tier(item) == "cluster")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A failure is printed the moment it happens, not only in the final summary: a
    process that dies later (a stopped Ray can end it) still leaves its failures in
    the CI log."""
    if report.failed:
        print(f"\nFAILED {report.nodeid} ({report.when})\n{report.longreprtext}", flush=True)


_SESSION: dict[str, Path] = {}


@pytest.fixture(scope="session")
def serve_logs(ray_cluster: str) -> Path:
    """Where this session's Serve replicas write their log files."""
    return _SESSION["dir"] / "logs" / "serve"


@pytest.fixture(scope="session")
def serve_runtime() -> ServeRuntime:
    """The substrate the stack runs by default (HAProxy ingress and the replicas' own
    HTTP servers where installed), on a free replica port: the CLI tier's stacks run
    beside this session's and would share a fixed one (SO_REUSEPORT)."""
    from serving.runtime.substrate import ServeRuntime

    return ServeRuntime().with_free_replica_port()


@pytest.fixture(scope="session")
def ray_cluster(serve_runtime: ServeRuntime) -> Iterator[str]:
    """One local Ray per session, with its dashboard (it carries Serve's deploy API).

    Serve's HTTP options and HAProxy's environment are fixed once it starts, so every
    tier that deploys the application shares ``serve_port`` and ``serve_runtime``.
    """
    import ray
    from ray import serve

    from serving.runtime.haproxy_edge import plan_for
    from serving.runtime.ports import free_port
    from serving.settings import ServingSettings

    defaults = ServingSettings(runtime=serve_runtime)
    edge = plan_for(defaults)
    with defaults.runtime.applied(defaults.limits.max_body_bytes, defaults.app_name, edge):
        context = ray.init(
            num_cpus=4,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=free_port(),
            logging_level=logging.WARNING,
        )
    _SESSION["dir"] = Path(context.address_info["session_dir"])  # type: ignore[attr-defined]
    try:
        yield f"http://{context.dashboard_url}"
    finally:
        if ray.is_initialized():  # the cluster tier may have stopped it already
            serve.shutdown()
            ray.shutdown()


@pytest.fixture(scope="session")
def test_keys(tmp_path_factory: pytest.TempPathFactory) -> TestKeys:
    """The key file every app served in this session reads, and its admin key."""
    return TestKeys.create(tmp_path_factory.mktemp("api-keys") / "keys.json")


@pytest.fixture(scope="session")
def api(test_keys: TestKeys) -> Iterator[requests.Session]:
    """HTTP with the session's admin key."""
    with test_keys.session() as session:
        yield session


@pytest.fixture(scope="session")
def serve_port() -> int:
    from serving.runtime.ports import free_port

    return free_port()


@pytest.fixture(scope="session")
def nan_npc_model() -> bytes:
    """A real ONNX model with the NPC contract whose every output is NaN."""
    import torch

    from models.export import export_onnx

    class NanPolicy(torch.nn.Module):
        def forward(self, observation: torch.Tensor) -> torch.Tensor:
            return torch.log(observation[:, :10] * 0.0 - 1.0)

    family = trainable_family("npc-behavior")
    return export_onnx(NanPolicy(), family.contract, family.example_inputs())
