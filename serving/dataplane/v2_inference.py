"""One Open Inference Protocol v2 inference, whichever transport carried it.

HTTP's ``/v2/models/{name}/infer`` and gRPC's ``ModelInfer`` decode different
wire formats into the same ``V2Request`` and then run the same steps: the
request is measured from receipt while it holds its admission ticket, Triton's
``parameters.timeout`` may tighten its deadline, and the plane routes and runs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.dataplane.admission import Ticket
from serving.dataplane.game_time import Answer, Call, parse_budget_ms
from serving.dataplane.plane import DataPlane

TIMEOUT_PARAMETER = "timeout"  # Triton's per-request timeout, in microseconds


@dataclass
class V2Request:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[tuple[str, bool]] = field(default_factory=list)  # (name, binary)
    binary_output: bool = False
    timeout_us: Any = None  # parameters.timeout, as sent; checked by infer_v2


async def infer_v2(
    plane: DataPlane,
    name: str,
    admitted: tuple[Call, Ticket],
    decode: Callable[[], Awaitable[V2Request]],
    *,
    version: str | None,
    routing_key: str | None,
) -> tuple[V2Request, Answer]:
    """Decode and answer one admitted request; ``decode`` runs inside the measurement,
    so reading and checking the body count toward its latency and its errors."""
    call, ticket = admitted
    with ticket, plane.observe(name, call.received) as seen:
        request = await decode()
        where = f"parameters.{TIMEOUT_PARAMETER}"
        timeout_ms = parse_budget_ms(request.timeout_us, where, scale=1e-3)
        if timeout_ms is not None:  # the earlier deadline wins
            call.deadline = call.deadline.tightened(timeout_ms, call.received)
        answer = await plane.infer(
            name, request.inputs, version=version, routing_key=routing_key, call=call
        )
        seen.answered(answer)
    return request, answer
