"""``inference.GRPCInferenceService`` over the data plane: what tritonclient.grpc calls.

Health, metadata and ``ModelInfer``; the rest of Triton's service (model
repository, shared memory, statistics, tracing) answers UNIMPLEMENTED, as a
KServe or MLServer server does. Every call but ServerLive and ServerReady takes
``authorization: Bearer <api key>`` metadata, checked by the same ``Access``
as HTTP; ``x-deadline-ms``, ``x-priority``, ``x-session-id`` and
``x-player-id`` mean what their HTTP headers mean, and a gRPC deadline counts
as one more deadline (the earliest wins).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import grpc
from google.protobuf.message import Message
from tritonclient.grpc import service_pb2 as pb

from models.errors import GameserveError, InvalidInputError
from serving.dataplane.game_time import Priority
from serving.dataplane.plane import DataPlane
from serving.protocol.access import Access
from serving.protocol.errors import grpc_status_name, grpc_trailers, report
from serving.protocol.keys import Scope
from serving.protocol.tensors import V2Request
from serving.protocol.terms import admit_by_headers, bearer_token, routing_key_of
from serving.protocol.v2 import V2Handlers
from serving.rpc.codec import decode_request, encode_response

logger = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
# A call's work on the loop is bounded by its deadline and the data plane's; this only
# frees grpcio's thread if the loop stopped answering altogether (a replica shutting down).
MAX_CALL_S = 60.0


def grpc_status(error: GameserveError) -> grpc.StatusCode:
    return grpc.StatusCode[grpc_status_name(error)]


@dataclass(frozen=True)
class Invocation:
    """What a call carries besides its message."""

    metadata: dict[str, str]
    received: float  # time.monotonic() when the handler started
    remaining_ms: float | None  # the gRPC deadline's budget; None without one
    ceiling: Priority | None = None  # the highest class the caller's key may ask for


Method = Callable[[Any, Invocation], Awaitable[Message]]


class InferenceService:
    """The service's methods over one data plane, behind one ``Access``."""

    def __init__(self, plane: DataPlane, access: Access) -> None:
        self.plane = plane
        self.handlers = V2Handlers(plane)
        self.access = access

    def handler(self, loop: asyncio.AbstractEventLoop) -> grpc.GenericRpcHandler:
        """The service for grpcio's server threads; every method runs on ``loop`` (the
        replica's own, where the data plane lives), so nothing of ours runs on two
        threads at once."""
        methods: dict[str, tuple[Method, Scope | None, type[Message]]] = {
            "ServerLive": (self.server_live, None, pb.ServerLiveRequest),
            "ServerReady": (self.server_ready, None, pb.ServerReadyRequest),
            "ModelReady": (self.model_ready, "read", pb.ModelReadyRequest),
            "ServerMetadata": (self.server_metadata, "read", pb.ServerMetadataRequest),
            "ModelMetadata": (self.model_metadata, "read", pb.ModelMetadataRequest),
            "ModelInfer": (self.model_infer, "infer", pb.ModelInferRequest),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    self._guarded(f"/{SERVICE}/{name}", method, scope, loop),
                    request_deserializer=kind.FromString,
                    response_serializer=lambda message: message.SerializeToString(),
                )
                for name, (method, scope, kind) in methods.items()
            },
        )

    def _guarded(
        self, name: str, method: Method, scope: Scope | None, loop: asyncio.AbstractEventLoop
    ) -> Callable[[Message, grpc.ServicerContext], Message]:
        """``method`` (the RPC ``name``) behind the key check, on ``loop``; its errors as
        gRPC statuses. The calling thread is grpcio's: it reads the call's metadata and
        deadline, hands the work to the loop and waits for it (benchmarks/grpc_servers.py
        measured this against grpcio's asyncio server: less CPU per call at c>=16)."""

        async def checked(request: Message, invocation: Invocation) -> Message:
            if scope is not None:
                key = bearer_token(invocation.metadata.get("authorization"))
                invocation = replace(invocation, ceiling=self.access.check(key, scope))
            return await method(request, invocation)

        def call(request: Message, context: grpc.ServicerContext) -> Message:
            received = time.monotonic()
            metadata = dict(context.invocation_metadata() or ())
            remaining = context.time_remaining()
            budget = None if remaining is None else remaining * 1000
            invocation = Invocation(metadata, received, budget)
            try:
                work = asyncio.run_coroutine_threadsafe(checked(request, invocation), loop)
                return work.result(timeout=MAX_CALL_S)
            except GameserveError as exc:
                report(exc, name)
                context.set_trailing_metadata(grpc_trailers(exc))
                context.abort(grpc_status(exc), exc.message)
            except Exception:
                logger.exception("%s: unhandled error", name)
                context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
            raise AssertionError("unreachable: abort raises")

        return call

    async def server_live(self, _: Message, __: Invocation) -> Message:
        return pb.ServerLiveResponse(live=self.handlers.live())

    async def server_ready(self, _: Message, __: Invocation) -> Message:
        return pb.ServerReadyResponse(ready=not await self.handlers.unready())

    async def model_ready(self, request: Any, _: Invocation) -> Message:
        status = await self.handlers.model_status(request.name, request.version)
        return pb.ModelReadyResponse(ready=status.ready)

    async def server_metadata(self, _: Message, __: Invocation) -> Message:
        return pb.ServerMetadataResponse(**asdict(self.handlers.server_metadata()))

    async def model_metadata(self, request: Any, _: Invocation) -> Message:
        # asdict turns the TensorMetadata too; protobuf takes dicts for message fields.
        found = await self.handlers.model_metadata(request.name, request.version)
        return pb.ModelMetadataResponse(**asdict(found))

    async def model_infer(self, request: Any, invocation: Invocation) -> Message:
        name: str = request.model_name
        if not name:
            raise InvalidInputError("model_name: required")
        metadata = invocation.metadata

        async def decode() -> V2Request:
            return decode_request(request)

        parsed, answer = await self.handlers.infer(
            name,
            admit_by_headers(
                self.plane,
                metadata,
                name,
                "v2",
                invocation.received,
                transport_budget_ms=invocation.remaining_ms,
                ceiling=invocation.ceiling,
            ),
            decode,
            version=request.model_version or None,
            routing_key=routing_key_of(metadata),
        )
        return encode_response(name, answer.version, parsed, answer.outputs, answer.provenance())
