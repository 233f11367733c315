"""Inputs proven by tools: schemathesis over the served OpenAPI document, hypothesis
over the v2 JSON and binary-tensor parsers. Bounded example counts keep CI quick."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)
from tritonclient.grpc import service_pb2 as pb

from models.errors import InvalidInputError
from serving.dataplane.backend import LocalBackend
from serving.dataplane.plane import DataPlane
from serving.http.app import create_app
from serving.http.v2_codec import HEADER_LENGTH, parse_request
from serving.protocol.tensors import DATATYPES, MAX_ELEMENTS
from serving.rpc.codec import decode_request
from tests.asgi.conftest import MAX_ROWS, calm_admission, settings_with_keys
from tests.payloads import npc

V2_INFER = "/v2/models/npc-behavior/infer"
# These tests judge how input is handled, not game time: on a loaded CI host a
# request once spent its route's 20 or 50 ms deadline before admission, and the
# 503 use_local it then got is game time working, not a server error.
PATIENT = {"X-Deadline-Ms": "60000"}
EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def api_schema(
    backends: dict[str, LocalBackend], key_file: Path, api_keys: dict[str, str]
) -> schemathesis.schemas.BaseSchema:
    plane = DataPlane(backends, max_rows_per_request=MAX_ROWS, admission=calm_admission())
    app = create_app(plane, settings_with_keys(key_file))
    admin = {"Authorization": f"Bearer {api_keys['admin']}"}
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers=admin)


def test_no_operation_answers_5xx_or_off_schema(
    api_schema: schemathesis.schemas.BaseSchema, api_keys: dict[str, str]
) -> None:
    """Every operation of the served document, with a valid key.

    (schemathesis's pytest plugin does not load under pytest 9, so the
    operations' strategies are driven by hypothesis here.)
    """
    admin = {"Authorization": f"Bearer {api_keys['admin']}"}
    labels = []
    for result in api_schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err raises here, as wanted
        labels.append(operation.label)

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case[Any]) -> None:
            response = case.call(headers={**admin, **PATIENT})
            assert response.status_code < 500, (case.method, case.path, response.text)
            if response.status_code < 400:
                case.validate_response(
                    response, checks=[response_schema_conformance, content_type_conformance]
                )

        check()
    assert "POST /v1/npc/act" in labels
    assert "POST /v2/models/{model_name}/infer" in labels


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=20,
)
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["observation", "x"]) | json_values,
        "datatype": st.sampled_from([*DATATYPES, "BYTES", "FP8"]) | json_values,
        "shape": st.lists(st.integers(-2, 2**62), max_size=4) | json_values,
        "data": st.lists(st.floats() | st.integers() | st.text(max_size=3), max_size=50)
        | json_values,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-1, 400) | st.floats() | json_values}
        )
        | json_values,
    },
)
headers = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=3) | json_values},
    optional={
        "id": json_values,
        "parameters": json_values,
        "outputs": json_values
        | st.lists(st.fixed_dictionaries({"name": json_values, "parameters": json_values})),
    },
)


@EXAMPLES
@given(header=headers, tail=st.binary(max_size=300), split=st.none() | st.integers(-5, 2000))
def test_the_v2_parser_answers_every_body_with_a_422_or_a_request(
    header: dict[str, object], tail: bytes, split: int | None
) -> None:
    encoded = json.dumps(header).encode()
    length = None if split is None else str(split if split != 0 else len(encoded))
    with contextlib.suppress(InvalidInputError):
        parse_request(encoded + tail, length)


@EXAMPLES
@given(body=st.binary(max_size=400), length=st.none() | st.text(max_size=6))
def test_the_v2_parser_survives_arbitrary_bytes(body: bytes, length: str | None) -> None:
    with contextlib.suppress(InvalidInputError):
        parse_request(body, length)


@EXAMPLES
@given(
    rows=st.integers(0, 3),
    datatype=st.sampled_from(sorted(DATATYPES)),
    declared=st.integers(-8, 2000),
    cut=st.integers(0, 64),
)
def test_binary_tensors_over_http_are_never_a_5xx(
    client: TestClient, rows: int, datatype: str, declared: int, cut: int
) -> None:
    raw = struct.pack("<f", 0.5) * (rows * 40)
    tensor = {"name": "observation", "shape": [rows, 40], "datatype": datatype,
              "parameters": {"binary_data_size": declared}}  # fmt: skip
    header = json.dumps({"inputs": [tensor]}).encode()
    body = header + raw[: max(0, len(raw) - cut)]
    headers = {HEADER_LENGTH: str(len(header)), **PATIENT}
    response = client.post(V2_INFER, content=body, headers=headers)
    assert response.status_code in (200, 400, 413, 422), response.text
    assert isinstance(response.json().get("error", ""), str)


@EXAMPLES
@given(
    field=st.sampled_from(["health", "ammo", "threat", "under_fire", "grenades", "armour"]),
    value=json_values,
)
def test_game_routes_refuse_unknown_fields_and_coercion(
    client: TestClient, field: str, value: object
) -> None:
    body = json.dumps({"npcs": [{**npc("a"), field: value}]})  # NaN and Infinity too
    response = client.post("/v1/npc/act", content=body, headers=PATIENT)
    assert response.status_code in (200, 422), response.text
    if field == "armour" or isinstance(value, str):
        assert response.status_code == 422
        assert response.json()["error"]["message"].startswith(f"npcs[0].{field}")


def test_near_float32_limit_inputs_are_a_422_not_a_500(client: TestClient) -> None:
    body = {"inputs": [{"name": "observation", "shape": [1, 40], "datatype": "FP32",
                        "data": [3.0e38] * 40}]}  # fmt: skip
    response = client.post(V2_INFER, json=body, headers=PATIENT)
    assert response.status_code == 422
    assert response.json()["error"].startswith("observation: values beyond")


_grpc_tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["observation", "", "x"]),
        "datatype": st.sampled_from([*DATATYPES, "BYTES", "FP8", ""]),
        "shape": st.lists(st.integers(-2, 1 << 20), max_size=10),
        "fp32": st.lists(st.floats(width=32), max_size=50),
        "int": st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=50),
    }
)


# Found by this test: no values, but a shape numpy cannot make (a ValueError, once).
_ZERO_BUT_HUGE = {
    "name": "observation", "datatype": "BOOL", "shape": [0, 124, 782, 11528, 38362, 215083],
    "fp32": [], "int": [],
}  # fmt: skip


@settings(max_examples=300, deadline=None)
@example(tensors=[_ZERO_BUT_HUGE], raw=None, timeout=None)
@given(
    tensors=st.lists(_grpc_tensor, max_size=3),
    raw=st.none() | st.lists(st.binary(max_size=200), max_size=4),
    timeout=st.none() | st.integers(-(1 << 40), 1 << 40),
)
def test_the_grpc_decoder_answers_every_request_with_invalid_input_or_a_request(
    tensors: list[dict[str, Any]], raw: list[bytes] | None, timeout: int | None
) -> None:
    """Whatever a gRPC client builds, the decoder returns tensors or names the bad field."""
    request = pb.ModelInferRequest(model_name="npc-behavior")
    for tensor in tensors:
        contents = pb.InferTensorContents(fp32_contents=tensor["fp32"], int_contents=tensor["int"])
        try:
            request.inputs.add(
                name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"],
                contents=contents,
            )  # fmt: skip
        except ValueError:  # protobuf refuses a shape outside int64 before we see it
            continue
    if raw is not None:
        request.raw_input_contents.extend(raw)
    if timeout is not None:
        request.parameters["timeout"].int64_param = timeout
    with contextlib.suppress(InvalidInputError):
        decoded = decode_request(request)
        for array in decoded.inputs.values():
            assert array.size <= MAX_ELEMENTS
