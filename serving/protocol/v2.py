"""The Open Inference Protocol v2 handlers, once for every transport.

HTTP (``serving/http/v2.py``) and gRPC (``serving/rpc/service.py``) convert
their wire formats to and from these calls and nothing more, as MLServer's
REST and gRPC servers share ``handlers/dataplane.py``. Readiness, metadata and
inference are decided here; each transport chooses only how to say it (HTTP
answers 503 for "not ready", gRPC ``ready: false``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from models.contract import TensorSpec
from serving.dataplane.admission import Ticket
from serving.dataplane.answering import not_serving
from serving.dataplane.backend import ModelStatus
from serving.dataplane.game_time import Answer, Call, parse_budget_ms
from serving.dataplane.plane import DataPlane
from serving.protocol.tensors import TIMEOUT_PARAMETER, V2Request, datatype_of

SERVER_NAME = "gameserve"
EXTENSIONS = ("binary_tensor_data",)
PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: list[int]

    @classmethod
    def of(cls, spec: TensorSpec) -> TensorMetadata:
        shape = [-1 if d is None else d for d in spec.shape]
        return cls(spec.name, datatype_of(spec.dtype), shape)


@dataclass(frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: list[str]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


def server_version() -> str:
    try:
        return package_version("gameserve")
    except PackageNotFoundError:
        return "unknown"


class V2Handlers:
    """live, ready, model ready, server and model metadata, infer: over one data plane."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self._server = ServerMetadata(SERVER_NAME, server_version(), list(EXTENSIONS))

    def live(self) -> bool:
        return True

    async def unready(self) -> list[str]:
        """The families meant to serve that cannot answer now; the server is ready when none.
        A family with no champion yet is not meant to serve, or one new spec file would
        take every family out of a load balancer's rotation; with no family served at
        all, none is ready."""
        statuses = [await self.plane.status(name) for name in sorted(self.plane.backends)]
        meant = [status for status in statuses if status.version is not None] or statuses
        return [status.family for status in meant if not status.ready]

    async def model_status(self, name: str, version: str | None) -> ModelStatus:
        """``name``'s status, or ``version``'s: ModelNotFoundError when it is not served."""
        status = await self.plane.status(name)
        if version and status.version != version:
            raise not_serving(name, version, status.version)
        return status

    def server_metadata(self) -> ServerMetadata:
        return self._server

    async def model_metadata(self, name: str, version: str | None) -> ModelMetadata:
        family = self.plane.family(name)
        status = await self.model_status(name, version)
        return ModelMetadata(
            name=name,
            versions=[status.version] if status.version else [],
            platform=PLATFORM,
            inputs=[TensorMetadata.of(s) for s in family.contract.inputs],
            outputs=[TensorMetadata.of(s) for s in family.contract.outputs],
        )

    async def infer(
        self,
        name: str,
        admitted: tuple[Call, Ticket],
        decode: Callable[[], Awaitable[V2Request]],
        *,
        version: str | None,
        routing_key: str | None,
    ) -> tuple[V2Request, Answer]:
        """Decode and answer one admitted request; ``decode`` runs inside the measurement,
        so reading and checking the body count toward its latency and its errors.

        Triton's ``parameters.timeout`` may tighten the call's deadline: the earlier wins.
        """
        call, ticket = admitted
        plane = self.plane
        with ticket, plane.observe(name, call.received) as seen:
            request = await decode()
            where = f"parameters.{TIMEOUT_PARAMETER}"
            timeout_ms = parse_budget_ms(request.timeout_us, where, scale=1e-3)
            if timeout_ms is not None:
                call.deadline = call.deadline.tightened(timeout_ms, call.received)
            answer = await plane.infer(
                name, request.inputs, version=version, routing_key=routing_key, call=call
            )
            seen.answered(answer)
        return request, answer
