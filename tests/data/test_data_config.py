"""DataConfig validation and data-root resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from prunepilot.data import DATA_ROOT_ENV, DataConfig
from prunepilot.errors import ConfigError


def test_defaults_are_frozen_hashable_and_documented() -> None:
    cfg = DataConfig()
    assert (cfg.name, cfg.batch_size, cfg.val_size, cfg.calib_size, cfg.seed) == ("digits", 128, 0.1, 512, 0)
    with pytest.raises(ValidationError):
        cfg.batch_size = 3  # type: ignore[misc]
    assert hash(cfg) == hash(DataConfig()) and cfg == DataConfig()
    assert cfg != DataConfig(seed=1)
    for name, field in DataConfig.model_fields.items():
        assert field.description, f"field {name} has no docstring"


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="batchsize"):
        DataConfig(batchsize=3)  # type: ignore[call-arg]


@pytest.mark.parametrize("name", ["mnist", "Digits", "pkg.module", ":fn", "pkg mod:fn"])
def test_bad_names_list_the_accepted_ones(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        DataConfig(name=name)
    message = str(info.value)
    assert repr(name) in message
    for accepted in ("'digits'", "'fashion-mnist'", "'cifar10'", "pkg.module:fn"):
        assert accepted in message


def test_import_path_names_are_accepted() -> None:
    assert DataConfig(name="my_pkg.data:load").name == "my_pkg.data:load"


@pytest.mark.parametrize("value", [0, -5, 0.0, 1.0, 1.5, -0.1, True])
def test_bad_val_size(value: float) -> None:
    with pytest.raises(ValidationError, match="val_size"):
        DataConfig(val_size=value)


def test_val_size_count_or_fraction_keeps_its_type() -> None:
    assert DataConfig(val_size=100).val_size == 100 and isinstance(DataConfig(val_size=100).val_size, int)
    assert DataConfig(val_size=0.25).val_size == 0.25


@pytest.mark.parametrize("field", ["batch_size", "eval_batch_size", "calib_size", "train_subset", "resize"])
def test_sizes_must_be_positive(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        DataConfig(**{field: 0})


def test_root_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert DataConfig(name="fashion-mnist").resolved_root() == tmp_path
    assert DataConfig(name="fashion-mnist", root=tmp_path / "x").resolved_root() == tmp_path / "x"


def test_missing_root_names_field_env_var_and_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    assert DataConfig(name="digits").resolved_root() is None  # bundled with scikit-learn
    with pytest.raises(ConfigError) as info:
        DataConfig(name="cifar10").resolved_root()
    message = str(info.value)
    assert "'root'" in message and DATA_ROOT_ENV in message and "--data-root" in message
