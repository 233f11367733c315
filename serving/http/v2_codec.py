"""Tensors of the Open Inference Protocol v2, JSON and binary.

The binary extension puts a JSON header first (its length in the
``Inference-Header-Content-Length`` header) followed by raw little-endian
tensor bytes, in input order, for each input whose parameters carry
``binary_data_size``. tritonclient sends this by default, with no
``Content-Type``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from models.errors import InvalidInputError
from serving.protocol.tensors import (
    MAX_ELEMENTS,
    TIMEOUT_PARAMETER,
    V2Request,
    datatype_of,
    elements,
    tensor_dtype,
)

HEADER_LENGTH = "Inference-Header-Content-Length"


def parse_request(body: bytes, header_length: str | None) -> V2Request:
    """Decode an infer request body, binary parts included.

    Every malformed part is an InvalidInputError naming the field: the body is
    input from the network, so no shape of it may reach numpy unchecked.
    """
    try:
        split = len(body) if header_length is None else int(header_length)
    except ValueError:
        raise InvalidInputError(f"{HEADER_LENGTH}: not an integer: {header_length!r}") from None
    if not 0 <= split <= len(body):
        raise InvalidInputError(f"{HEADER_LENGTH}: {split} is outside the body")
    header = _load_json(body[:split])
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInputError("inputs: a list of tensors is required")
    binary = memoryview(body)[split:]
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for index, tensor in enumerate(header["inputs"]):
        array, used = _decode_input(index, tensor, binary[offset:])
        inputs[tensor["name"]] = array
        offset += used
    if offset != len(binary):
        raise InvalidInputError(f"body: {len(binary) - offset} binary bytes belong to no input")
    parameters = _object(header.get("parameters"), "parameters")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str | int):
        raise InvalidInputError("id: a string is required")
    return V2Request(
        id=None if request_id is None else str(request_id),
        inputs=inputs,
        outputs=_requested_outputs(header.get("outputs")),
        binary_output=_flag(parameters, "binary_data_output", "parameters.binary_data_output"),
        timeout_us=parameters.get(TIMEOUT_PARAMETER),
    )


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where}: an object is required")
    return value


def _flag(parameters: dict[str, Any], name: str, where: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInputError(f"{where}: true or false is required")
    return value


def _requested_outputs(value: Any) -> list[tuple[str, bool]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInputError("outputs: a list of {name, parameters} is required")
    outputs = []
    for index, output in enumerate(value):
        where = f"outputs[{index}]"
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InvalidInputError(f"{where}.name: a string is required")
        parameters = _object(output.get("parameters"), f"{where}.parameters")
        outputs.append((output["name"], _flag(parameters, "binary_data", f"{where}.binary_data")))
    return outputs


def _load_json(text: bytes) -> Any:
    try:
        # orjson, not json: an order of magnitude faster on a tick's arrays.
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower():
            raise InvalidInputError(f"body: JSON nested too deeply: {exc}") from None
    # Python's json module writes NaN and Infinity, which orjson refuses: accept them
    # here so the contract check can name the tensor that carries them.
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInputError(f"body: not valid JSON: {exc}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decode_input(index: int, tensor: Any, binary: memoryview) -> tuple[np.ndarray, int]:
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise InvalidInputError(f"{where}.name: required")
    where = f"inputs[{index}] ({tensor['name']})"
    datatype = tensor.get("datatype")
    dtype = tensor_dtype(where, datatype)
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise InvalidInputError(f"{where}.shape: a list of non-negative integers is required")
    expected = elements(where, shape)
    size = _object(tensor.get("parameters"), f"{where}.parameters").get("binary_data_size")
    if size is not None:
        if not _is_int(size) or size != expected * dtype.itemsize or size > len(binary):
            raise InvalidInputError(
                f"{where}.parameters.binary_data_size: {size!r} bytes do not hold "
                f"shape {shape} of {datatype}"
            )
        flat = np.frombuffer(binary[:size], dtype=dtype.newbyteorder("<"))
        return flat.reshape(shape), size
    if "data" not in tensor:
        raise InvalidInputError(f"{where}.data: required unless binary_data_size is given")
    array = _json_data(where, tensor["data"], dtype, str(datatype))
    if array.size != expected:
        raise InvalidInputError(f"{where}.data: {array.size} values do not fill shape {shape}")
    return array.reshape(shape), 0


def _json_data(where: str, data: Any, dtype: np.dtype[Any], datatype: str) -> np.ndarray:
    """JSON values as ``dtype``: numbers (or booleans for BOOL) only, never strings."""
    if not isinstance(data, list):
        raise InvalidInputError(f"{where}.data: a list of values is required")
    try:
        raw = np.asarray(data)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{where}.data: not a regular array of values: {exc}") from None
    allowed = "b" if dtype.kind == "b" else "biuf"
    if raw.size and raw.dtype.kind not in allowed:
        raise InvalidInputError(f"{where}.data: not {datatype} values (got {raw.dtype.kind!r})")
    if raw.size > MAX_ELEMENTS:
        raise InvalidInputError(f"{where}.data: {raw.size} values are more than any request may be")
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            array = raw.astype(dtype)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInputError(f"{where}.data: not {datatype} values: {exc}") from None
    return array.reshape(-1)


def encode_response(
    model_name: str,
    version: str | None,
    request: V2Request,
    outputs: Mapping[str, np.ndarray],
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers; binary when the client asked for it."""
    wanted = request.outputs or [(name, request.binary_output) for name in outputs]
    tensors, blobs = [], []
    for index, (name, binary) in enumerate(wanted):
        if name not in outputs:
            raise InvalidInputError(f"outputs[{index}].name: the model has no output {name!r}")
        array = np.ascontiguousarray(outputs[name])
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(array.dtype),
            "shape": list(array.shape),
        }
        if binary:
            raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = array.reshape(-1)  # orjson writes it without a list of floats
        tensors.append(tensor)
    header: dict[str, Any] = {"model_name": model_name}
    if version is not None:  # a fallback's answer comes from no version
        header["model_version"] = version
    if request.id is not None:
        header["id"] = request.id
    if parameters:
        header["parameters"] = parameters
    header["outputs"] = tensors
    encoded = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return encoded, {"Content-Type": "application/json"}
    return encoded + b"".join(blobs), {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(encoded)),
    }
