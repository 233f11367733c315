"""The serving benchmark's request mix: every load point, as each protocol sends it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import tritonclient.http as triton
from tritonclient.grpc import service_pb2 as pb

from benchmarks import wrk
from models import FAMILIES
from tests.payloads import npc_tick

NPC = "npc-behavior"
TICK = 128
BIG_TICK = 1024
JSON = {"Content-Type": "application/json"}


def v2_body(rows: int) -> tuple[bytes, dict[str, str]]:
    observation = FAMILIES[NPC].example_inputs(rows=rows)["observation"]
    tensor = triton.InferInput("observation", list(observation.shape), "FP32")
    tensor.set_data_from_numpy(observation, binary_data=True)
    outputs = [triton.InferRequestedOutput("action_probs", binary_data=True)]
    body, header_length = triton.InferenceServerClient.generate_request_body(
        [tensor], outputs=outputs
    )
    headers = {"Content-Type": "application/octet-stream"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    return body, headers


def v2_json(rows: int) -> bytes:
    observation = FAMILIES[NPC].example_inputs(rows=rows)["observation"]
    tensor = {
        "name": "observation",
        "shape": list(observation.shape),
        "datatype": "FP32",
        "data": observation.ravel().tolist(),
    }
    return json.dumps({"inputs": [tensor]}).encode()


@dataclass(frozen=True)
class GrpcLoad:
    """A load point over gRPC: a serialized ModelInferRequest, sent as is."""

    body: bytes
    connections: int
    rows_per_request: int = 1
    metadata: dict[str, str] = field(default_factory=dict)


Point = wrk.Load | GrpcLoad


def grpc_request(rows: int) -> bytes:
    """What tritonclient.grpc sends: the tick as one raw little-endian tensor."""
    observation = FAMILIES[NPC].example_inputs(rows=rows)["observation"]
    request = pb.ModelInferRequest(
        model_name=NPC, raw_input_contents=[observation.astype("<f4").tobytes()]
    )
    request.inputs.add(name="observation", datatype="FP32", shape=observation.shape)
    request.outputs.add(name="action_probs")
    return bytes(request.SerializeToString())


SINGLE = (1, 8, 16, 64)
V2_PATH = f"/v2/models/{NPC}/infer"


def loads(
    game_api: bool = True,
    v2: bool = True,
    binary: bool = True,
    grpc: bool = False,
    key: str | None = None,
) -> dict[str, list[Point]]:
    """The request mix; each target gets the parts of it that it speaks.

    ``key``: gameserve's API key, sent with every request as a game server would.
    """
    mix: dict[str, list[Point]] = {}
    if game_api:
        single, tick = (json.dumps(npc_tick(n)).encode() for n in (1, TICK))
        mix["single JSON"] = [wrk.Load("/v1/npc/act", single, JSON, c) for c in SINGLE]
        mix[f"tick {TICK} JSON"] = [wrk.Load("/v1/npc/act", tick, JSON, 8, TICK)]
    if v2:
        mix["single v2 JSON"] = [wrk.Load(V2_PATH, v2_json(1), JSON, c) for c in SINGLE]
        mix[f"tick {TICK} v2 JSON"] = [wrk.Load(V2_PATH, v2_json(TICK), JSON, 8, TICK)]
    if binary:
        for rows in (TICK, BIG_TICK):
            body, headers = v2_body(rows)
            mix[f"tick {rows} v2 binary"] = [wrk.Load(V2_PATH, body, headers, 8, rows)]
    if grpc:
        single = grpc_request(1)
        mix["single gRPC"] = [GrpcLoad(single, c) for c in SINGLE]
        for rows in (TICK, BIG_TICK):
            mix[f"tick {rows} gRPC"] = [GrpcLoad(grpc_request(rows), 8, rows)]
    if key is None:
        return mix
    return {name: [_keyed(load, key) for load in points] for name, points in mix.items()}


def _keyed(load: Point, key: str) -> Point:
    if isinstance(load, GrpcLoad):
        return replace(load, metadata={**load.metadata, "authorization": f"Bearer {key}"})
    return replace(load, headers={**load.headers, "Authorization": f"Bearer {key}"})


def single_json(connections: int) -> dict[str, list[Point]]:
    """The plain process's single-NPC load at one concurrency."""
    body = json.dumps(npc_tick(1)).encode()
    return {"single JSON": [wrk.Load("/v1/npc/act", body, JSON, connections)]}
