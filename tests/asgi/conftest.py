from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models import FAMILIES, trainable_families
from models.runtime import OnnxModel
from models.training import TrainSettings
from serving.dataplane.admission import Admission, AdmissionBounds
from serving.dataplane.backend import LocalBackend
from serving.dataplane.game_time import FamilyTiming
from serving.dataplane.plane import DataPlane
from serving.http.app import create_app
from serving.protocol.keys import KeyStore
from serving.settings import AuthSettings, GameTimeSettings, ServingSettings

FAST = TrainSettings(train_samples=4_000, eval_samples=500, epochs=2)
MAX_ROWS = 64


@pytest.fixture(scope="session")
def onnx_models() -> dict[str, bytes]:
    """A real exported ONNX model per family (quality is not the point here)."""
    return {name: family.train(FAST).export() for name, family in trainable_families().items()}


def calm_admission() -> Admission:
    """Admission that sheds by in-flight bounds only, not by the loop's lateness.

    A TestClient runs the app's loop on a thread that shares the GIL with the
    test's own: between requests the test thread holds it, so the loop's timer
    fires late with no backlog at all. Shedding by lateness is tested where
    the load is real (tests/asgi/test_game_time.py, benchmarks/overload.py).
    """
    return Admission(AdmissionBounds(normal_lag_ms=1e6, best_effort_lag_ms=1e6))


# Kept back from every deadline for the fallback in ``fallback_timing``: a request sent
# with a deadline of this much is admitted (its budget is not spent on arrival) and
# leaves the model no time at all, so the fallback answers, however fast the machine.
FALLBACK_DEADLINE_MS = 50.0


def fallback_timing(name: str) -> FamilyTiming:
    """The families' game-time terms with ``FALLBACK_DEADLINE_MS`` kept for the fallback."""
    reserved = GameTimeSettings(fallback_reserve_ms=FALLBACK_DEADLINE_MS)
    return ServingSettings(game_time=reserved).timing(name)


def backend(name: str, model: bytes | None, version: str | None = "1") -> LocalBackend:
    session = None if model is None else OnnxModel(model, FAMILIES[name].contract, prefer_gpu=False)
    return LocalBackend(name, session, version)


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys") / "keys.json"


@pytest.fixture(scope="session")
def api_keys(key_file: Path) -> dict[str, str]:
    """One real key per scope, plus ``ops`` with infer and read."""
    store = KeyStore(key_file)
    keys = {scope: store.create(f"{scope}-key", [scope]) for scope in ("infer", "read", "admin")}
    keys["ops"] = store.create("ops-key", ["infer", "read"])
    return keys


def settings_with_keys(key_file: Path, **changes: object) -> ServingSettings:
    return ServingSettings.model_validate({"auth": AuthSettings(keys_file=key_file), **changes})


def open_client(plane: DataPlane, key_file: Path, key: str) -> TestClient:
    """A TestClient over the guarded app that sends ``key`` with every request."""
    app = create_app(plane, settings_with_keys(key_file))
    return TestClient(
        app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {key}"}
    )


@pytest.fixture
def backends(onnx_models: dict[str, bytes]) -> dict[str, LocalBackend]:
    return {name: backend(name, model) for name, model in onnx_models.items()}


@pytest.fixture
def client(
    backends: dict[str, LocalBackend], key_file: Path, api_keys: dict[str, str]
) -> Iterator[TestClient]:
    plane = DataPlane(backends, max_rows_per_request=MAX_ROWS, admission=calm_admission())
    with open_client(plane, key_file, api_keys["ops"]) as test_client:
        yield test_client
