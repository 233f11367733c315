"""A family's override merges field by field over what the family declares."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models import get_family, install_catalog, installed_catalog
from pipelines.settings import Settings
from serving.settings import FamilyServing, ServingSettings

SPEC = Path(__file__).parents[1] / "e2e" / "families" / "match-outcome.toml"
BUILT_IN = ("npc-behavior", "difficulty-tuning", "personalization")

# One field of each class a studio overrides, with a value no family declares.
OVERRIDES: dict[str, tuple[str, Any]] = {
    "timing": ("deadline_ms", 37.0),
    "class": ("priority", "best_effort"),
    "batching": ("max_batch_rows", 64),
    "scaling": ("autoscaling", {"max_replicas": 3}),
}


@pytest.fixture(autouse=True)
def registry_restored() -> Iterator[None]:
    before = installed_catalog()
    yield
    install_catalog(before)


@pytest.mark.parametrize("family", BUILT_IN)
@pytest.mark.parametrize("field_class", sorted(OVERRIDES))
def test_one_field_overridden_keeps_every_other_declared_default(
    family: str, field_class: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    field, value = OVERRIDES[field_class]
    override = json.dumps({family: {field: value}})
    monkeypatch.setenv("GAMESERVE_SERVING__FAMILIES", override)
    serving = Settings().serving.family(family)
    declared = dict(get_family(family).serving_defaults)
    assert declared, f"{family} declares no serving defaults: the test would prove nothing"
    for name, default in declared.items():
        if name != field:
            assert getattr(serving, name) == default, f"{family}.{name} lost its default"
    got = getattr(serving, field)
    assert (got.max_replicas if field == "autoscaling" else got) == (
        value["max_replicas"] if isinstance(value, dict) else value
    )


def test_the_npc_trap_of_the_review_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAMESERVE_SERVING__FAMILIES", '{"npc-behavior": {"max_batch_rows": 64}}')
    npc = Settings().serving.family("npc-behavior")
    assert (npc.deadline_ms, npc.priority, npc.max_batch_rows) == (20.0, "critical", 64)


def test_nested_blocks_merge_and_a_model_given_in_code_merges_too() -> None:
    serving = ServingSettings(
        families={
            "difficulty-tuning": {"on_miss": {"v2": "fallback"}},
            "personalization": FamilyServing(deadline_ms=8.0),
        }
    )
    difficulty = serving.family("difficulty-tuning")
    assert (difficulty.on_miss.game, difficulty.on_miss.v2) == ("fallback", "fallback")
    assert difficulty.cache_ttl_s == 30.0
    personalization = serving.family("personalization")
    assert (personalization.deadline_ms, personalization.max_batch_rows) == (8.0, 256)
    assert personalization.priority == "best_effort"


def test_a_bad_override_still_names_its_field() -> None:
    with pytest.raises(ValueError, match="max_batch_rows"):
        ServingSettings(families={"npc-behavior": {"max_batch_rows": 0}})


def test_rollout_overrides_keep_the_declared_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = [{"name": "all", "weight": 1.0, "bake_s": 5}]
    monkeypatch.setenv(
        "GAMESERVE_ROLLOUT__FAMILIES",
        json.dumps({"personalization": {"steps": steps, "thresholds": {"min_requests": 7}}}),
    )
    plan = Settings().rollout.family("personalization")
    assert [step.name for step in plan.steps] == ["all"]
    assert plan.thresholds.min_requests == 7
    assert plan.thresholds.max_divergence == 0.5  # declared by personalization


def test_a_spec_family_override_meets_its_declared_defaults_once_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "families"
    folder.mkdir()
    text = SPEC.read_text() + '\n[serving]\ndeadline_ms = 40.0\npriority = "critical"\n'
    (folder / "match-outcome.toml").write_text(text)
    monkeypatch.setenv("GAMESERVE_SERVING__FAMILIES", '{"match-outcome": {"max_batch_rows": 32}}')
    monkeypatch.setenv(
        "GAMESERVE_ROLLOUT__FAMILIES", '{"match-outcome": {"thresholds": {"min_requests": 9}}}'
    )
    settings = Settings(data_dir=tmp_path)  # built before the spec file is read
    settings = settings.with_families()
    family = settings.serving.family("match-outcome")
    assert (family.max_batch_rows, family.deadline_ms, family.priority) == (32, 40.0, "critical")
    plan = settings.rollout.family("match-outcome")
    assert (plan.thresholds.min_requests, plan.thresholds.max_divergence) == (9, 0.3)
