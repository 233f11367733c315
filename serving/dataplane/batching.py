"""Concatenating requests into one model call and splitting the result back.

Pure numpy, so it is tested without Ray; the replica's ``@serve.batch``
method is a thin shell around it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

Tensors = Mapping[str, np.ndarray]


def rows(request: Tensors) -> int:
    """Batch rows of one request (every input shares the first axis)."""
    return int(next(iter(request.values())).shape[0])


def total_rows(requests: Sequence[Tensors]) -> int:
    return sum(rows(r) for r in requests)


def shape_key(request: Tensors) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Requests whose tensors agree on every axis but the first can share a call."""
    return tuple(sorted((name, tuple(array.shape[1:])) for name, array in request.items()))


def run_batched(
    requests: Sequence[Tensors], run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
) -> tuple[list[dict[str, np.ndarray]], int]:
    """Run ``requests`` in as few calls as their shapes allow.

    Returns each request's outputs, in order, and the number of calls made.
    Personalization requests with different candidate counts cannot be
    concatenated; they form separate groups rather than being padded.
    """
    groups: dict[tuple[tuple[str, tuple[int, ...]], ...], list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(shape_key(request), []).append(index)
    results: list[dict[str, np.ndarray]] = [{} for _ in requests]
    for members in groups.values():
        names = list(requests[members[0]])
        merged = {
            name: np.concatenate([requests[i][name] for i in members], axis=0) for name in names
        }
        outputs = run(merged)
        offset = 0
        for i in members:
            n = rows(requests[i])
            results[i] = {name: value[offset : offset + n] for name, value in outputs.items()}
            offset += n
    return results, len(groups)


# One request as a batch queue holds it: its inputs and its deadline on the wall
# clock (None: none), which crosses processes where the monotonic clock does not.
Work = tuple[Tensors, float | None]


def work_rows(requests: Sequence[Work]) -> int:
    return total_rows([inputs for inputs, _ in requests])


def run_live(
    requests: Sequence[Work],
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    finish_by: float,
) -> tuple[list[dict[str, np.ndarray] | None], int]:
    """``run_batched`` over the requests whose deadline is still ahead of ``finish_by``
    (when the batch is expected to finish: ``ServiceTime``).

    Returns each request's outputs in order (None for one dropped unrun: its
    deadline passed while it queued, or would before its answer came back) and
    the number of model calls.
    """
    live = [i for i, (_, at) in enumerate(requests) if at is None or at > finish_by]
    outputs, calls = run_batched([requests[i][0] for i in live], run)
    results: list[dict[str, np.ndarray] | None] = [None] * len(requests)
    for i, output in zip(live, outputs, strict=True):
        results[i] = output
    return results, calls


class ServiceTime:
    """How long a batch has taken lately (a moving average), so that work which cannot
    finish before its deadline is not started.

    Dropping only work already expired is not enough where a batch takes a while:
    with a 50 ms kernel and requests queued near their deadline, a replica spent
    its time on answers that came back after the caller had given up, and two
    replicas answered 3 of 56 ticks a second they could have served (the full
    cluster scenario, tests/cluster/event_scenario.py). Not started, a request's
    caller gets its fallback at once instead of at its deadline.
    """

    def __init__(self, weight: float = 0.2) -> None:
        self.weight = weight
        self._mean_s: float | None = None

    def expected_s(self) -> float:
        return self._mean_s or 0.0

    def observe(self, seconds: float) -> None:
        mean = self._mean_s
        self._mean_s = seconds if mean is None else mean + self.weight * (seconds - mean)
