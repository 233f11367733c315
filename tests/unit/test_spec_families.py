"""Families from outside the codebase: spec files and installed packages' entry points."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models import FAMILIES, get_family, install_catalog, installed_catalog
from models.catalog import (
    ENTRY_POINT_GROUP,
    Catalog,
    builtin_catalog,
    catalog_of,
    entry_point_families,
    load_families,
)
from models.errors import InvalidInputError
from models.spec import FamilySpec, SpecFamily, read_spec

SPEC = Path(__file__).parents[1] / "e2e" / "families" / "match-outcome.toml"


@pytest.fixture(autouse=True)
def registry_restored() -> Iterator[None]:
    before = installed_catalog()
    yield
    install_catalog(before)


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "family.toml"
    path.write_text(text)
    return path


def test_a_spec_file_declares_a_family_without_python() -> None:
    family = SpecFamily(read_spec(SPEC))
    assert family.name == "match-outcome"
    assert family.contract.input("teams").shape == (None, 2, 6)
    assert family.contract.output("win_probability").dtype == "float32"
    assert not family.trainable
    assert family.game_route is None  # served on v2 only
    assert family.headline_metric is None
    assert dict(family.rollout_thresholds) == {"max_divergence": 0.3}
    examples = family.example_inputs(rows=5, seed=3)
    assert examples["teams"].shape == (5, 2, 6)
    assert examples["teams"].dtype == np.float32
    assert 0.0 <= examples["teams"].min() <= examples["teams"].max() <= 1.0
    np.testing.assert_array_equal(examples["teams"], family.example_inputs(rows=5, seed=3)["teams"])
    family.contract.validate_inputs(examples)


def test_declared_checks_and_divergence_judge_outputs() -> None:
    family = SpecFamily(read_spec(SPEC))
    good = np.array([[0.7, 0.3], [0.5, 0.5]], dtype=np.float32)
    bad = np.array([[0.7, 0.7], [np.nan, 0.5]], dtype=np.float32)
    assert not family.invalid_rows({"win_probability": good}).any()
    assert family.invalid_rows({"win_probability": bad}).tolist() == [True, True]
    assert family.invalid_rows({"other": good}).all()  # its output missing: every row
    flipped = good[:, ::-1].copy()
    divergence = family.divergence({"win_probability": good}, {"win_probability": flipped})
    np.testing.assert_allclose(divergence, [0.4, 0.0], atol=1e-6)


def test_range_checks_and_mean_abs_divergence(tmp_path: Path) -> None:
    spec = read_spec(
        _spec(
            tmp_path,
            """
name = "cheat-score"
description = "Telemetry -> cheat likelihood"
[[inputs]]
name = "telemetry"
dtype = "int64"
shape = [-1, -1]
range = [0, 100]
[[outputs]]
name = "likelihood"
dtype = "float32"
shape = [-1]
range = [0.0, 1.0]
checks = ["finite", "range"]
[divergence]
measure = "mean_abs"
[serving]
placement = "deployment"
""",
        )
    )
    family = SpecFamily(spec)
    examples = family.example_inputs(rows=3)["telemetry"]
    assert examples.shape == (3, 4)  # a dynamic axis other than the batch gets 4
    assert examples.dtype == np.int64
    assert family.invalid_rows({"likelihood": np.array([0.2, 1.5], np.float32)}).tolist() == [
        False,
        True,
    ]
    divergence = family.divergence(
        {"likelihood": np.array([0.2, 0.9])}, {"likelihood": np.array([0.4, 0.9])}
    )
    np.testing.assert_allclose(divergence, [0.2, 0.0])
    assert dict(family.serving_defaults) == {"placement": "deployment"}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('name = "x"', "description"),
        ('name = "Bad Name"\ndescription = "d"', "name"),
        (SPEC.read_text().replace("shape = [-1, 2, 6]", "shape = [2, 6]"), "teams.shape"),
        (SPEC.read_text().replace('"probabilities"]', '"sums"]'), "checks"),
        (SPEC.read_text().replace('"total_variation"', '"mean_abs"'), "win_probability.range"),
        ("extra = 1\n" + SPEC.read_text(), "extra"),
        ("name = [", "not a readable TOML spec"),
    ],
)
def test_a_broken_spec_is_refused_naming_the_file_and_field(
    tmp_path: Path, text: str, named: str
) -> None:
    path = _spec(tmp_path, text)
    with pytest.raises(InvalidInputError, match=str(path)) as error:
        read_spec(path)
    assert named in error.value.message


def test_a_spec_folder_registers_once_and_a_conflicting_declaration_is_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "match-outcome.toml").write_text(SPEC.read_text())
    specs = load_families(tmp_path)
    assert [spec.name for spec in specs] == ["match-outcome"]
    assert isinstance(get_family("match-outcome"), SpecFamily)
    # What each replica builds from the specs it is given: the same catalog.
    assert catalog_of(specs) == installed_catalog()
    changed = FamilySpec.model_validate(
        {**specs[0].model_dump(), "description": "something else entirely"}
    )
    with pytest.raises(InvalidInputError, match="declared twice"):
        installed_catalog().with_families([SpecFamily(changed)])
    assert load_families(tmp_path / "absent") == []
    assert "match-outcome" not in FAMILIES  # the folder's catalog replaced the last, whole


def test_an_installed_package_adds_families_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real distribution on sys.path, as `pip install studio-models` would leave it.
    (tmp_path / "studio_models.py").write_text(
        "from pathlib import Path\n"
        "from models.spec import SpecFamily, read_spec\n"
        f"SKILL = SpecFamily(read_spec(Path({str(SPEC)!r})))\n"
    )
    info = tmp_path / "studio_models-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: studio-models\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nskill = studio_models:SKILL\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "studio_models", raising=False)
    added = entry_point_families()
    assert [family.name for family in added] == ["match-outcome"]
    assert "match-outcome" not in FAMILIES  # found, not installed
    load_families(None)
    assert get_family("match-outcome") == added[0]
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nskill = pathlib:Path\n")
    with pytest.raises(InvalidInputError, match="not a ModelFamily"):
        entry_point_families()


def test_settings_load_the_families_folder_and_refuse_bad_defaults_at_start(
    tmp_path: Path,
) -> None:
    from pipelines.settings import Settings

    folder = tmp_path / "families"
    folder.mkdir()
    (folder / "match-outcome.toml").write_text(SPEC.read_text())
    settings = Settings(data_dir=tmp_path).with_families()
    assert [spec.name for spec in settings.serving.family_specs] == ["match-outcome"]
    assert settings.rollout.family("match-outcome").thresholds.max_divergence == 0.3
    install_catalog(builtin_catalog())
    (folder / "match-outcome.toml").write_text(
        SPEC.read_text().replace("max_divergence = 0.3", "max_divergance = 0.3")
    )
    with pytest.raises(InvalidInputError, match="max_divergance"):
        Settings(data_dir=tmp_path).with_families()


def test_the_catalog_cannot_be_changed_in_place() -> None:
    catalog = installed_catalog()
    npc = catalog["npc-behavior"]
    with pytest.raises(TypeError):
        FAMILIES["npc-behavior"] = npc  # type: ignore[index]
    with pytest.raises(TypeError):
        catalog["npc-behavior"] = npc  # type: ignore[index]
    with pytest.raises(AttributeError):
        FAMILIES.clear()  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        catalog._families = {}
    with pytest.raises(TypeError):
        catalog._families["x"] = npc  # type: ignore[index]
    assert list(catalog) == ["npc-behavior", "difficulty-tuning", "personalization"]


def test_a_catalog_survives_pickling_as_replicas_receive_it() -> None:
    import pickle

    catalog = Catalog([*builtin_catalog().values(), SpecFamily(read_spec(SPEC))])
    loaded = pickle.loads(pickle.dumps(catalog))
    assert list(loaded) == list(catalog)
    assert loaded["match-outcome"] == catalog["match-outcome"]
