"""Channel options for a gRPC client of gameserve's OIP v2 (``tritonclient.grpc``).

An ingress replica that stops (a scale-down, a redeploy) finishes the calls it
has taken, but gRPC's server answers CANCELLED to a call that reaches it in the
moment between its last accepted call and its GOAWAY (grpc/grpc#41785), and a
replica killed outright answers its callers UNAVAILABLE. Every inference call is
idempotent and was not run by the model in either case, so the channel retries
both, within the call's own deadline: HAProxy does the same for HTTP
(``retry-on conn-failure empty-response``), and gRPC has no proxy in front.
"""

from __future__ import annotations

import json
from typing import Any

SERVICE = "inference.GRPCInferenceService"
RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 3,
    "initialBackoff": "0.01s",
    "maxBackoff": "0.1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
}
# tritonclient's own default when no channel_args are given: no practical limit.
MAX_MESSAGE_BYTES = 2**31 - 1


def grpc_channel_args(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    """For ``tritonclient.grpc.InferenceServerClient(url, channel_args=...)``, or
    ``grpc.insecure_channel(target, options=...)``."""
    config = {"methodConfig": [{"name": [{"service": SERVICE}], "retryPolicy": RETRY_POLICY}]}
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(config)),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
