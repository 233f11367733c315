"""Game time without Ray or HTTP: deadlines, fallbacks, admission by class, expired work."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from models import FAMILIES
from models.errors import InvalidInputError, OverloadedError
from models.spec import SpecFamily, read_spec
from serving.dataplane.admission import Admission, AdmissionBounds
from serving.dataplane.batching import ServiceTime, run_batched, run_live
from serving.dataplane.game_time import Deadline, parse_budget_ms, parse_priority
from serving.settings import ServingSettings

SPEC = Path(__file__).parents[1] / "e2e" / "families" / "match-outcome.toml"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_built_in_fallback_passes_its_familys_own_output_checks(name: str) -> None:
    family = FAMILIES[name]
    assert family.fallback_policy is not None
    for seed in range(3):
        inputs = family.example_inputs(rows=16, seed=seed)
        outputs = family.fallback_outputs(inputs)
        for spec in family.contract.outputs:  # shaped and typed as the model's
            value = outputs[spec.name]
            assert value.dtype == np.dtype(spec.dtype)
            assert value.ndim == len(spec.shape)
            assert all(d is None or d == n for d, n in zip(spec.shape, value.shape, strict=True))
            assert len(value) == 16
        assert not family.invalid_rows(outputs).any()


def test_the_npc_fallback_is_the_teacher_and_personalization_falls_back_to_the_trend() -> None:
    from models.npc import teacher_probabilities
    from models.personalization import ITEM_FEATURES

    npc = FAMILIES["npc-behavior"]
    observation = npc.example_inputs(rows=8)["observation"]
    expected = teacher_probabilities(observation.astype(np.float64))
    fallback = npc.fallback_outputs({"observation": observation})["action_probs"]
    assert np.array_equal(fallback.argmax(axis=1), expected.argmax(axis=1))

    ranking = FAMILIES["personalization"]
    items = ranking.example_inputs(rows=1)["items"]
    scores = ranking.fallback_outputs({"player": np.zeros((1, 16)), "items": items})["scores"]
    trend = items[0, :, ITEM_FEATURES.index("trend")]
    assert np.array_equal(np.argsort(-scores[0], kind="stable"), np.argsort(-trend, kind="stable"))


def test_a_spec_family_falls_back_to_its_declared_constant_and_a_wrong_one_is_refused() -> None:
    spec = read_spec(SPEC)
    family = SpecFamily(spec)
    outputs = family.fallback_outputs(family.example_inputs(rows=5))
    assert outputs["win_probability"].shape == (5, 2)
    assert not family.invalid_rows(outputs).any()
    with pytest.raises(ValueError, match="fallback: the constant fails"):
        spec.model_validate({**spec.model_dump(), "fallback": {"win_probability": [0.9, 0.9]}})
    with pytest.raises(ValueError, match=r"fallback\.win_probability: shape"):
        spec.model_validate({**spec.model_dump(), "fallback": {"win_probability": [1.0]}})
    no_fallback = SpecFamily(spec.model_copy(update={"fallback": None}))
    assert no_fallback.fallback_policy is None


def test_families_declare_deadlines_and_classes_and_settings_override_them() -> None:
    defaults = ServingSettings()
    assert defaults.timing("npc-behavior").deadline_ms == 20
    assert defaults.timing("npc-behavior").priority == "critical"
    assert defaults.timing("difficulty-tuning").priority == "normal"
    assert defaults.timing("personalization").priority == "best_effort"
    timing = defaults.timing("personalization")
    assert (timing.on_miss("game"), timing.on_miss("v2")) == ("fallback", "error")
    changed = ServingSettings.model_validate(
        {"families": {"personalization": {"deadline_ms": 40, "on_miss": {"game": "error"}}}}
    )
    assert changed.timing("personalization").deadline_ms == 40
    assert changed.timing("personalization").on_miss("game") == "error"


@pytest.mark.parametrize(
    ("value", "field"),
    [("soon", "x-deadline-ms"), ("0", "x-deadline-ms"), ("nan", "x-deadline-ms"),
     ("1e9", "x-deadline-ms")],
)  # fmt: skip
def test_a_bad_deadline_is_refused_naming_its_field(value: str, field: str) -> None:
    with pytest.raises(InvalidInputError, match=field):
        parse_budget_ms(value, field)


def test_a_triton_timeout_is_microseconds_and_a_priority_must_be_a_class() -> None:
    assert parse_budget_ms(2500, "parameters.timeout", scale=1e-3) == 2.5
    assert parse_priority(" Best_Effort ", "critical") == "best_effort"
    assert parse_priority(None, "normal") == "normal"
    with pytest.raises(InvalidInputError, match="x-priority"):
        parse_priority("urgent", "normal")


def test_a_deadline_tightens_to_the_earlier_and_knows_when_it_passed() -> None:
    now = time.monotonic()
    deadline = Deadline.after(50, now)
    assert deadline.tightened(10, now).budget_ms == 10
    assert deadline.tightened(80, now) is deadline
    assert Deadline.after(1, now - 1).expired()
    assert abs(deadline.wall_at() - (time.time() + deadline.remaining_s())) < 0.01


def test_expired_work_in_a_batch_never_reaches_the_model() -> None:
    calls: list[int] = []

    def model(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}

    now = time.time()
    work = [
        ({"x": np.ones((2, 3))}, now - 0.001),  # expired while it queued
        ({"x": np.ones((1, 3))}, None),
        ({"x": np.ones((4, 3))}, now + 1.0),
        ({"x": np.ones((3, 3))}, now - 5.0),
    ]
    outputs, model_calls = run_live(work, model, now)
    assert [o is None for o in outputs] == [True, False, False, True]
    assert calls == [5]  # one call, only the live rows
    assert model_calls == 1
    assert outputs[2] is not None
    assert outputs[2]["y"].shape == (4, 3)
    assert run_live([work[0]], model, now) == ([None], 0)
    assert run_batched([], model) == ([], 0)


def test_work_that_cannot_finish_before_its_deadline_is_not_started() -> None:
    """With batches taking 50 ms lately, a request 20 ms from its deadline would come
    back after its caller gave up: it is dropped, and its caller falls back at once."""
    service = ServiceTime()
    assert service.expected_s() == 0.0  # nothing measured: only expired work is dropped
    for seconds in (0.050, 0.050, 0.060):
        service.observe(seconds)
    assert service.expected_s() == pytest.approx(0.052)
    now = time.time()
    work = [({"x": np.ones((1, 3))}, now + 0.020), ({"x": np.ones((1, 3))}, now + 0.200)]
    outputs, _ = run_live(work, lambda inputs: {"y": inputs["x"]}, now + service.expected_s())
    assert [o is None for o in outputs] == [True, False]


def test_admission_sheds_best_effort_first_and_critical_last() -> None:
    # Best effort fits below 3 requests in flight, normal below 6, critical below 12.
    admission = Admission(
        AdmissionBounds(max_in_flight=12, normal_share=0.5, best_effort_share=0.25)
    )

    async def fill() -> None:
        held = [admission.admit("critical") for _ in range(2)]
        best_effort = admission.admit("best_effort")
        assert best_effort.admitted
        with pytest.raises(OverloadedError):  # 3 in flight: best effort is shed
            admission.admit("best_effort")
        normal = [admission.admit("normal") for _ in range(3)]
        assert all(t.admitted for t in normal)
        assert not admission.admit("normal").admitted  # 6 in flight: its fallback answers
        critical = [admission.admit("critical") for _ in range(5)]
        assert all(t.admitted for t in critical)  # critical: up to max_in_flight
        assert not admission.admit("critical").admitted
        assert sum(admission.in_flight.values()) == 13
        for ticket in [*held, best_effort, *normal, *critical]:
            ticket.__exit__(None, None, None)
        admission.lag.lag_s = 0.050  # a loop 50 ms behind
        with pytest.raises(OverloadedError):
            admission.admit("best_effort")
        assert not admission.admit("normal").admitted
        assert admission.admit("critical").admitted
        admission.lag.stop()

    asyncio.run(fill())


def test_the_loop_lag_probe_sees_a_standing_backlog_not_one_slow_callback() -> None:
    async def measure() -> tuple[float, float]:
        admission = Admission()
        admission.admit("critical").__exit__(None, None, None)  # starts the probe
        await asyncio.sleep(0.05)
        time.sleep(0.03)  # noqa: ASYNC251 -- one slow callback, on purpose
        await asyncio.sleep(0.012)
        after_one = admission.lag.lag_s
        for _ in range(12):  # a backlog: the loop is late at every look
            time.sleep(0.02)  # noqa: ASYNC251 -- a loop with more work than time
            await asyncio.sleep(0)
        backlog = admission.lag.lag_s
        admission.lag.stop()
        return after_one, backlog

    after_one, backlog = asyncio.run(measure())
    assert after_one < 0.003
    assert backlog > 0.010
