"""Channel options for a gRPC client of gameserve's OIP v2 (``tritonclient.grpc``).

An ingress replica that stops (a scale-down, a redeploy) finishes the calls it
has taken, but gRPC's server answers CANCELLED to a call that reaches it in the
moment between its last accepted call and its GOAWAY (grpc/grpc#41785), and a
replica killed outright answers its callers UNAVAILABLE. Every inference call is
idempotent and was not run by the model in either case, so the channel retries
both, within the call's own deadline: HAProxy does the same for HTTP
(``retry-on conn-failure empty-response``), and gRPC has no proxy in front.

A redeploy can also leave the port with no listener for a moment (Serve may stop
the old replica before the new one listens), and a listener that closes drops
the connections in its accept queue: connecting fails before any call is sent.
gRPC fails such calls at once by default and then backs off for a second before
it reconnects; here calls wait for a ready connection instead (``waitForReady``),
reconnects are retried after 0.1 to 1 s, and a call without a deadline of its own
gets ``wait_s``, so a dead server fails calls rather than holding them forever.
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


def grpc_channel_args(
    max_message_bytes: int = MAX_MESSAGE_BYTES, wait_s: float = 5.0
) -> list[tuple[str, Any]]:
    """For ``tritonclient.grpc.InferenceServerClient(url, channel_args=...)``, or
    ``grpc.insecure_channel(target, options=...)``. ``wait_s`` is the deadline of a
    call that sets none (tritonclient's ``client_timeout``, grpc's ``timeout``)."""
    method = {
        "name": [{"service": SERVICE}],
        "waitForReady": True,
        "timeout": f"{wait_s:g}s",
        "retryPolicy": RETRY_POLICY,
    }
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps({"methodConfig": [method]})),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
