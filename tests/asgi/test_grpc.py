"""OIP v2 over gRPC in-process: tritonclient.grpc, unmodified, against the real server.

The server runs on its own event loop on a thread, over the same data plane
and the same key checks as HTTP; the client talks to it through a loopback
socket. A conformance run of what a Triton client needs: live, ready,
metadata, raw-tensor infer, and the status codes of its errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from models import trainable_family
from serving.dataplane.backend import LocalBackend
from serving.dataplane.plane import DataPlane
from serving.protocol.access import Access
from serving.protocol.errors import ERROR_CODE_METADATA
from serving.rpc.server import GrpcServer
from serving.rpc.service import InferenceService
from serving.runtime.ports import free_port
from tests.asgi.conftest import MAX_ROWS, calm_admission, settings_with_keys
from tests.grpc_calls import GrpcCalls

NPC = trainable_family("npc-behavior")
MAX_MESSAGE = 64 * 1024


@dataclass
class Running:
    server: GrpcServer
    loop: asyncio.AbstractEventLoop
    address: str


@contextlib.contextmanager
def _running(plane: DataPlane, key_file: Path, port: int | None = None) -> Iterator[Running]:
    """The gRPC service over ``plane`` on a loopback port (``port``, else a free one),
    on a loop of its own."""
    access = Access.from_settings(settings_with_keys(key_file))
    port = port or free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> GrpcServer:
        server = GrpcServer(
            InferenceService(plane, access), "127.0.0.1", port,
            max_message_bytes=MAX_MESSAGE, max_concurrent_rpcs=8,
        )  # fmt: skip
        await server.start()
        return server

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield Running(server, loop, f"127.0.0.1:{port}")
    finally:
        asyncio.run_coroutine_threadsafe(_stop(server), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def address(backends: dict[str, LocalBackend], key_file: Path) -> Iterator[str]:
    plane = DataPlane(backends, max_rows_per_request=MAX_ROWS, admission=calm_admission())
    with _running(plane, key_file) as running:
        yield running.address


async def _stop(server: GrpcServer) -> None:
    await server.stop(1.0)
    for task in asyncio.all_tasks():  # the admission's loop-lag probe
        if task is not asyncio.current_task():
            task.cancel()


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _inputs(rows: int, shape: list[int] | None = None) -> list[triton.InferInput]:
    observation = NPC.example_inputs(rows=rows)["observation"][:rows]
    tensor = triton.InferInput("observation", shape or list(observation.shape), "FP32")
    if shape is None:
        tensor.set_data_from_numpy(observation)
    else:
        tensor.set_data_from_numpy(np.zeros(shape, np.float32))
    return [tensor]


def _refused(call: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_tritonclient_health_metadata_and_raw_infer(
    address: str, api_keys: dict[str, str], backends: dict[str, LocalBackend]
) -> None:
    headers = _auth(api_keys["ops"])
    with triton.InferenceServerClient(address) as client:
        # Probes need no key, as on HTTP.
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("npc-behavior", headers=headers)
        assert client.is_model_ready("npc-behavior", "1", headers=headers)
        server = client.get_server_metadata(headers=headers)
        assert server.name == "gameserve"
        assert "binary_tensor_data" in server.extensions
        meta = client.get_model_metadata("personalization", headers=headers, as_json=True)
        assert meta["versions"] == ["1"]
        assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
            ("player", "FP32", ["-1", "16"]),
            ("items", "FP32", ["-1", "-1", "12"]),
        ]
        # tritonclient sends raw_input_contents and reads raw_output_contents: no JSON.
        inputs = _inputs(5)
        result = client.infer("npc-behavior", inputs, headers=headers, request_id="tick-7")
        response = result.get_response()
        assert (response.model_name, response.model_version, response.id) == (
            "npc-behavior", "1", "tick-7",
        )  # fmt: skip
        assert response.parameters["source"].string_param == "model"
        npc = backends["npc-behavior"].model
        assert npc is not None
        expected = npc.predict({"observation": NPC.example_inputs(rows=5)["observation"][:5]})
        assert set(expected) == {o.name for o in response.outputs}
        for name, array in expected.items():
            np.testing.assert_allclose(result.as_numpy(name), array, rtol=1e-6)
        # One output asked for, by name, and a version pinned.
        only = [triton.InferRequestedOutput(next(iter(expected)))]
        pinned = client.infer("npc-behavior", inputs, "1", outputs=only, headers=headers)
        assert [o.name for o in pinned.get_response().outputs] == [next(iter(expected))]


def test_errors_are_grpc_statuses_naming_the_field(address: str, api_keys: dict[str, str]) -> None:
    headers = _auth(api_keys["ops"])
    with triton.InferenceServerClient(address) as client:
        wrong = _refused(lambda: client.infer("npc-behavior", _inputs(2, [2, 39]), headers=headers))
        assert wrong.status() == "StatusCode.INVALID_ARGUMENT"
        assert "observation" in wrong.message()
        unknown = _refused(lambda: client.infer("dragons", _inputs(1), headers=headers))
        assert unknown.status() == "StatusCode.NOT_FOUND"
        assert "dragons" in unknown.message()
        version = _refused(lambda: client.get_model_metadata("npc-behavior", "7", headers=headers))
        assert version.status() == "StatusCode.NOT_FOUND"
        too_many = _refused(
            lambda: client.infer("npc-behavior", _inputs(1, [MAX_ROWS + 1, 40]), headers=headers)
        )
        assert too_many.status() == "StatusCode.INVALID_ARGUMENT"
        assert f"limit of {MAX_ROWS}" in too_many.message()
        # Larger than limits.max_body_bytes: refused by gRPC before it is decoded.
        huge = _refused(
            lambda: client.infer("npc-behavior", _inputs(1, [512, 40]), headers=headers)
        )
        assert huge.status() == "StatusCode.RESOURCE_EXHAUSTED"
        # Keys: none, or one without the infer scope.
        anonymous = _refused(lambda: client.infer("npc-behavior", _inputs(1)))
        assert anonymous.status() == "StatusCode.UNAUTHENTICATED"
        reader = _auth(api_keys["read"])
        denied = _refused(lambda: client.infer("npc-behavior", _inputs(1), headers=reader))
        assert denied.status() == "StatusCode.PERMISSION_DENIED"
        assert "'infer' scope" in denied.message()
        # Triton's model repository is not ours to serve.
        unimplemented = _refused(lambda: client.get_model_repository_index(headers=headers))
        assert unimplemented.status() == "StatusCode.UNIMPLEMENTED"


def test_typed_contents_and_the_game_error_code(address: str, api_keys: dict[str, str]) -> None:
    """A client built from KServe's proto may send typed values instead of raw bytes."""
    observation = NPC.example_inputs(rows=3)["observation"][:3]
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="observation", datatype="FP32", shape=[3, 40],
        contents=pb.InferTensorContents(fp32_contents=observation.reshape(-1).tolist()),
    )  # fmt: skip
    request = pb.ModelInferRequest(model_name="npc-behavior", inputs=[tensor])
    metadata = tuple(_auth(api_keys["ops"]).items())
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        typed = stub.ModelInfer(request, metadata=metadata, timeout=30)
        raw = pb.ModelInferRequest(model_name="npc-behavior", raw_input_contents=[
            observation.astype("<f4").tobytes()
        ])  # fmt: skip
        raw.inputs.add(name="observation", datatype="FP32", shape=[3, 40])
        assert stub.ModelInfer(raw, metadata=metadata, timeout=30) == typed
        tensor.contents.fp32_contents.pop()
        short = pb.ModelInferRequest(model_name="npc-behavior", inputs=[tensor])
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(short, metadata=metadata, timeout=30)
        error = caught.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "fp32_contents: 119 values" in error.details()
        trailing = dict(error.trailing_metadata())
        assert trailing[ERROR_CODE_METADATA] == "invalid_input"


class _Slow(LocalBackend):
    """Answers once ``release`` is set: a call the server is still working on."""

    def __init__(self, inner: LocalBackend, entered: threading.Event) -> None:
        super().__init__(inner.family, inner.model, inner.version)
        self.entered = entered
        self.release = asyncio.Event()

    async def predict(self, inputs, deadline=None):  # type: ignore[no-untyped-def]
        self.entered.set()
        await self.release.wait()
        return await super().predict(inputs, deadline)


def test_a_stopping_server_finishes_calls_in_flight(
    backends: dict[str, LocalBackend], key_file: Path, api_keys: dict[str, str]
) -> None:
    """What a replica's ``__del__`` does on a scale-down: new calls go elsewhere (the
    port is shared), calls already taken are answered."""
    entered = threading.Event()
    slow = _Slow(backends["npc-behavior"], entered)
    plane = DataPlane({**backends, "npc-behavior": slow}, MAX_ROWS, admission=calm_admission())
    headers = {**_auth(api_keys["ops"]), "x-deadline-ms": "30000"}
    with (
        _running(plane, key_file) as running,
        triton.InferenceServerClient(running.address) as client,
    ):
        pending: list[object] = []
        client.async_infer(
            "npc-behavior", _inputs(2), lambda result, error: pending.append(error or result),
            headers=headers,
        )  # fmt: skip
        assert entered.wait(10)
        stopping = asyncio.run_coroutine_threadsafe(running.server.stop(10.0), running.loop)
        time.sleep(0.3)  # the stop has begun: the listener is closed
        with triton.InferenceServerClient(running.address) as late:
            assert _refused(lambda: late.is_server_live()).status() == "StatusCode.UNAVAILABLE"
        running.loop.call_soon_threadsafe(slow.release.set)
        stopping.result(timeout=15)
        deadline = time.monotonic() + 10
        while not pending and time.monotonic() < deadline:
            time.sleep(0.05)
        (result,) = pending
        assert not isinstance(result, InferenceServerException), result
        assert result.as_numpy("action_probs").shape == (2, 10)  # type: ignore[attr-defined]


def test_replacing_the_replica_on_a_shared_port_loses_no_call(
    backends: dict[str, LocalBackend], key_file: Path, api_keys: dict[str, str]
) -> None:
    """Redeploys as Serve runs them: sometimes the new replica binds the shared port
    before the old one stops, sometimes the old one stops first and the port is
    closed for a moment. Connections fail meanwhile (refused, or reset as the old
    listener's accept queue is dropped), before any call was sent: the client
    options wait for a ready connection, so no call fails within its deadline."""
    plane = DataPlane(backends, max_rows_per_request=MAX_ROWS, admission=calm_admission())
    port = free_port()
    replicas = contextlib.ExitStack()
    replicas.enter_context(_running(plane, key_file, port))
    try:
        with GrpcCalls(f"127.0.0.1:{port}", api_keys["ops"], calls_per_connection=5) as callers:
            for swap in range(6):
                time.sleep(0.3)
                if swap % 2:  # the port is closed for a moment
                    replicas.close()
                    time.sleep(0.5)
                new = contextlib.ExitStack()
                new.enter_context(_running(plane, key_file, port))
                replicas.close()
                replicas = new
            time.sleep(0.3)
    finally:
        replicas.close()
    print(f"\n{callers.answered} calls across 6 replacements, {len(callers.failures)} failed")
    assert callers.answered > 100
    assert callers.failures == []
