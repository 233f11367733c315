"""The tensors of an Open Inference Protocol v2 request, whichever transport carried them.

HTTP (``serving/http/v2_codec.py``) and gRPC (``serving/rpc/codec.py``) decode
different wire formats into the same ``V2Request``, with the same datatype
table and the same bounds, so a request refused on one is refused on the other
with the same message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.errors import InvalidInputError

TIMEOUT_PARAMETER = "timeout"  # Triton's per-request timeout, in microseconds

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_NAMES = {dtype: name for name, dtype in DATATYPES.items()}
MAX_DIMENSIONS = 8
# Beyond any batch a request may carry (serving.max_rows_per_request rows of a
# few hundred values): a shape that asks for more is refused before any allocation.
MAX_ELEMENTS = 1 << 24


@dataclass
class V2Request:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[tuple[str, bool]] = field(default_factory=list)  # (name, binary)
    binary_output: bool = False
    timeout_us: Any = None  # parameters.timeout, as sent; checked by V2Handlers.infer


def datatype_of(dtype: np.dtype[Any] | str) -> str:
    return _NAMES[np.dtype(dtype)]


def tensor_dtype(where: str, datatype: Any) -> np.dtype[Any]:
    """The numpy type of a v2 ``datatype``; InvalidInputError naming ``where`` if none."""
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInputError(f"{where}.datatype: unsupported {datatype!r}")
    return dtype


def elements(where: str, shape: list[int]) -> int:
    """How many values ``shape`` holds, refused before any allocation when too many.

    The bound is on the non-zero dimensions: ``[0, 10**6, 10**6, ...]`` holds no value
    but is no shape numpy can give an array (it answered ValueError, a 500)."""
    expected = math.prod(shape)
    if len(shape) > MAX_DIMENSIONS or math.prod(d for d in shape if d) > MAX_ELEMENTS:
        raise InvalidInputError(f"{where}.shape: {shape} is larger than any request may be")
    return expected
