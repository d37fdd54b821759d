"""fit, evaluate_accuracy and the base-model cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import prunepilot.training.base_models as base_models
from prunepilot.data import DataConfig, build_data
from prunepilot.errors import DataError
from prunepilot.models import build_model
from prunepilot.training import TrainConfig, evaluate_accuracy, fit, train_base_model


class _Constant(nn.Module):
    """Always predicts ``label``; records whether gradients were enabled in forward."""

    def __init__(self, label: int, classes: int = 3) -> None:
        super().__init__()
        self.label, self.classes = label, classes
        self.scale = nn.Parameter(torch.ones(()))
        self.grad_enabled: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.grad_enabled.append(torch.is_grad_enabled())
        logits = torch.zeros(x.shape[0], self.classes)
        logits[:, self.label] = 1.0
        return logits * self.scale


def _loader(n: int = 40, batch: int = 8, classes: int = 3) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = torch.arange(n) % classes
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def test_train_config_validates_choices() -> None:
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.schedule) == ("sgd", "cosine")
    with pytest.raises(ValidationError, match=r"'sgd', 'adam' or 'adamw'|sgd.*adam.*adamw"):
        TrainConfig(optimizer="rmsprop")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="schedule"):
        TrainConfig(schedule="linear")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        TrainConfig(lr=0)
    with pytest.raises(ValidationError):
        TrainConfig(extra=1)  # type: ignore[call-arg]
    for name, field in TrainConfig.model_fields.items():
        assert field.description, f"field {name} has no docstring"


@pytest.mark.parametrize("was_training", [True, False])
def test_evaluate_accuracy_is_exact_restores_mode_and_needs_no_grad(was_training: bool) -> None:
    model = _Constant(label=1)
    model.train(was_training)
    assert evaluate_accuracy(model, _loader(n=30)) == pytest.approx(10 / 30)
    assert model.training is was_training
    assert model.grad_enabled and not any(model.grad_enabled)
    # 2 batches of 8: labels 0..15 % 3 hold five 1s
    assert evaluate_accuracy(model, _loader(n=30), max_batches=2) == pytest.approx(5 / 16)


def test_evaluate_accuracy_on_no_samples_is_an_error() -> None:
    with pytest.raises(DataError, match="no samples"):
        evaluate_accuracy(_Constant(0), _loader(), max_batches=0)


def test_simplecnn_learns_digits_above_90_percent() -> None:
    data = build_data(DataConfig(name="digits", batch_size=64))
    torch.manual_seed(0)
    model = build_model("simplecnn?width_mult=0.25", num_classes=data.num_classes, in_channels=1)
    cfg = TrainConfig(epochs=3, optimizer="adam", lr=1e-2, weight_decay=0.0)
    history = fit(model, data.train, cfg, val_loader=data.val)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_acc"] > 0.90
    assert evaluate_accuracy(model, data.val) == history[-1]["val_acc"]
    assert model.training  # fit leaves the model in training mode


def test_loss_hook_and_batch_cap() -> None:
    calls: list[int] = []

    def loss_fn(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        calls.append(inputs.shape[0])
        return nn.functional.cross_entropy(model(inputs), targets) * 0.5

    model = build_model("testing:tiny-convnet", num_classes=3, in_channels=1)
    history = fit(model, _loader(), TrainConfig(epochs=2, max_batches_per_epoch=3), loss_fn=loss_fn)
    assert calls == [8] * 6
    assert all(0.0 <= h["train_acc"] <= 1.0 and h["val_acc"] is None for h in history)


@pytest.mark.parametrize(("schedule", "final_factor"), [("constant", 1.0), ("step", 0.01), ("cosine", 0.0)])
def test_schedules_end_where_they_should(schedule: str, final_factor: float) -> None:
    model = build_model("testing:tiny-convnet", num_classes=3, in_channels=1)
    history = fit(model, _loader(), TrainConfig(epochs=4, lr=0.1, schedule=schedule))  # type: ignore[arg-type]
    assert history[-1]["lr"] == pytest.approx(0.1 * final_factor, abs=1e-9)
    assert history[0]["lr"] > 0.0


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_fit_is_deterministic_for_a_seed(optimizer: str) -> None:
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("testing:tiny-residual", num_classes=3, in_channels=1)
        loader = DataLoader(_loader().dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1))
        fit(model, loader, TrainConfig(epochs=2, optimizer=optimizer, lr=0.01, seed=5))  # type: ignore[arg-type]
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    start = build_model("testing:tiny-residual", num_classes=3, in_channels=1).state_dict()
    assert any(not torch.equal(start[k], states[0][k]) for k in start if start[k].is_floating_point())


def test_progress_bar_does_not_change_results(capsys: pytest.CaptureFixture[str]) -> None:
    results = []
    for progress in (False, True):
        torch.manual_seed(0)
        model = build_model("testing:tiny-convnet", num_classes=3, in_channels=1)
        results.append(fit(model, _loader(), TrainConfig(epochs=1), progress=progress)[0]["train_loss"])
    assert results[0] == results[1]


def test_train_base_model_caches_weights_and_skips_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_cfg = DataConfig(name="digits", train_subset=256, batch_size=64)
    train_cfg = TrainConfig(epochs=1, lr=0.05)
    model, info = train_base_model("testing:tiny-convnet", data_cfg, train_cfg, tmp_path)
    assert info["cached"] is False and not model.training
    assert 0.0 <= info["val_acc"] <= 1.0 and len(info["history"]) == 1
    assert info["num_classes"] == 10 and info["input_shape"] == [1, 8, 8]
    assert Path(info["checkpoint"]).is_file() and set(info["versions"]) >= {"torch", "prunepilot"}

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(base_models, "fit", no_training)
    # root, workers and eval batch size do not change the trained model, so they share the cache
    again, info2 = train_base_model(
        "testing:tiny-convnet",
        data_cfg.model_copy(update={"num_workers": 0, "eval_batch_size": 7}),
        train_cfg,
        tmp_path,
    )
    assert info2["cached"] is True and info2["key"] == info["key"] and info2["val_acc"] == info["val_acc"]
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())

    monkeypatch.undo()
    _, info3 = train_base_model("testing:tiny-convnet", data_cfg, TrainConfig(epochs=1, lr=0.01), tmp_path)
    assert info3["cached"] is False and info3["key"] != info["key"]
