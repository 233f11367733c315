"""The Open Inference Protocol v2 in-process: metadata, JSON and binary infer, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models import FAMILIES, trainable_family
from tests.payloads import v2_binary_body

NPC = trainable_family("npc-behavior")
HEADER = "Inference-Header-Content-Length"


def _error(response, status: int, code: str) -> str:  # type: ignore[no-untyped-def]
    """Triton's error body, ``{"error": "<message>"}``: what tritonclient prints.

    ``code`` is the game API's name for the same error; v2 carries the status alone.
    """
    assert response.status_code == status, (code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str), body
    message: str = body["error"]
    return message


def test_server_and_model_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
    meta = client.get("/v2/models/personalization").json()
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": "player", "datatype": "FP32", "shape": [-1, 16]},
        {"name": "items", "datatype": "FP32", "shape": [-1, -1, 12]},
    ]
    assert client.get("/v2/models/npc-behavior/versions/1/ready").json()["ready"] is True
    _error(client.get("/v2/models/npc-behavior/versions/7"), 404, "model_not_found")
    _error(client.get("/v2/models/dragons"), 404, "model_not_found")


def test_json_infer_returns_json_tensors(client: TestClient) -> None:
    observation = NPC.example_inputs(rows=3)["observation"]
    body = {
        "id": "tick-42",
        "inputs": [
            {"name": "observation", "shape": [3, 40], "datatype": "FP32",
             "data": observation.reshape(-1).tolist()}
        ],
    }  # fmt: skip
    response = client.post("/v2/models/npc-behavior/infer", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["id"], result["model_name"], result["model_version"]) == (
        "tick-42",
        "npc-behavior",
        "1",
    )
    (output,) = result["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (
        "action_probs",
        "FP32",
        [3, 10],
    )
    probs = np.asarray(output["data"]).reshape(3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_binary_infer_without_content_type_returns_binary(client: TestClient) -> None:
    observation = NPC.example_inputs(rows=5)["observation"]
    body, headers = v2_binary_body({"observation": observation})
    response = client.post(
        "/v2/models/npc-behavior/versions/1/infer", content=body, headers=headers
    )
    assert response.status_code == 200, response.text
    split = int(response.headers[HEADER])
    header = json.loads(response.content[:split])
    (output,) = header["outputs"]
    assert output["parameters"]["binary_data_size"] == 5 * 10 * 4
    probs = np.frombuffer(response.content[split:], dtype="<f4").reshape(5, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    json_body = {
        "inputs": [{"name": "observation", "shape": [5, 40], "datatype": "FP32",
                    "data": observation.reshape(-1).tolist()}],
        "outputs": [{"name": "action_probs", "parameters": {"binary_data": False}}],
    }  # fmt: skip
    as_json = client.post("/v2/models/npc-behavior/infer", json=json_body).json()
    np.testing.assert_allclose(np.asarray(as_json["outputs"][0]["data"]).reshape(5, 10), probs)


def test_multi_input_binary_infer(client: TestClient) -> None:
    inputs = FAMILIES["personalization"].example_inputs(rows=2)
    body, headers = v2_binary_body(inputs)
    response = client.post("/v2/models/personalization/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    header = json.loads(response.content[: int(response.headers[HEADER])])
    assert header["outputs"][0]["shape"] == [2, inputs["items"].shape[1]]


@pytest.mark.parametrize(
    ("tensor", "expected"),
    [
        ({"name": "observation", "shape": [1, 39], "datatype": "FP32", "data": [0.0] * 39},
         "observation: axis 1 must have size 40"),
        ({"name": "observation", "shape": [1, 40], "datatype": "FP32", "data": [0.0] * 39},
         "inputs[0] (observation).data: 39 values do not fill shape [1, 40]"),
        ({"name": "observation", "shape": [1, 40], "datatype": "BYTES", "data": ["x"] * 40},
         "inputs[0] (observation).datatype: unsupported 'BYTES'"),
        ({"name": "observation", "shape": [1, 40], "datatype": "FP32", "data": ["x"] * 40},
         "inputs[0] (observation).data: not FP32 values"),
        ({"name": "observation", "shape": [1, 40], "datatype": "FP32",
          "data": [float("nan")] * 40}, "observation: contains NaN"),
        ({"name": "obs", "shape": [1, 40], "datatype": "FP32", "data": [0.0] * 40},
         "missing input tensor(s): observation"),
        ({"name": "observation", "shape": "1x40", "datatype": "FP32", "data": [0.0] * 40},
         "inputs[0] (observation).shape"),
        # No values, but no shape numpy can make either (found by the gRPC fuzz test).
        ({"name": "observation", "shape": [0, 124, 782, 11528, 38362, 215083],
          "datatype": "BOOL", "data": []},
         "inputs[0] (observation).shape: [0, 124, 782, 11528, 38362, 215083] is larger"),
    ],
)  # fmt: skip
def test_bad_tensors_are_422_naming_the_tensor(
    client: TestClient, tensor: dict[str, object], expected: str
) -> None:
    response = client.post(
        "/v2/models/npc-behavior/infer",
        content=json.dumps({"inputs": [tensor]}),  # json.dumps writes NaN as the JS literal
        headers={"Content-Type": "application/json"},
    )
    assert expected in _error(response, 422, "invalid_input")


def test_bad_binary_framing_is_422(client: TestClient) -> None:
    observation = NPC.example_inputs(rows=2)["observation"]
    body, headers = v2_binary_body({"observation": observation})
    for bad_headers, bad_body, expected in [
        ({HEADER: "abc"}, body, f"{HEADER}: not an integer"),
        ({HEADER: str(len(body) + 10)}, body, "outside the body"),
        (headers, body[:-4], "binary_data_size"),
        (headers, body + b"\0\0\0\0", "belong to no input"),
        ({HEADER: "5"}, body, "body: not valid JSON"),
    ]:
        response = client.post(
            "/v2/models/npc-behavior/infer", content=bad_body, headers=bad_headers
        )
        assert expected in _error(response, 422, "invalid_input")
    unknown_output = {
        "inputs": [{"name": "observation", "shape": [2, 40], "datatype": "FP32",
                    "data": observation.reshape(-1).tolist()}],
        "outputs": [{"name": "q_values"}],
    }  # fmt: skip
    response = client.post("/v2/models/npc-behavior/infer", json=unknown_output)
    assert "outputs[0].name" in _error(response, 422, "invalid_input")
