"""Knowledge-distillation loss (Hinton et al. 2015) and resumable fit checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunepilot.errors import CheckpointError, ConfigError
from prunepilot.models import build_model
from prunepilot.training import (
    DistillConfig,
    TrainConfig,
    distillation_loss,
    fit,
    kd_loss,
    list_states,
    load_train_config,
)


# --- KD loss ------------------------------------------------------------------------------------
def _logits(seed: int, n: int = 6, classes: int = 5) -> torch.Tensor:
    return torch.randn(n, classes, generator=torch.Generator().manual_seed(seed)) * 3


def test_kd_alpha_zero_is_cross_entropy_and_alpha_one_ignores_labels() -> None:
    s, t, y = _logits(0), _logits(1), torch.tensor([0, 1, 2, 3, 4, 0])
    assert torch.allclose(kd_loss(s, t, y, temperature=4.0, alpha=0.0), F.cross_entropy(s, y))
    other_labels = (y + 1) % 5
    assert torch.allclose(kd_loss(s, t, y, alpha=1.0), kd_loss(s, t, other_labels, alpha=1.0))


def test_kd_matches_the_formula_and_vanishes_when_student_equals_teacher() -> None:
    s, t, y = _logits(0), _logits(1), torch.tensor([0, 1, 2, 3, 4, 0])
    temp, alpha = 3.0, 0.7
    p_t = F.softmax(t / temp, dim=1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / temp, dim=1))).sum(1).mean()
    expected = alpha * temp**2 * kl + (1 - alpha) * F.cross_entropy(s, y)
    assert torch.allclose(kd_loss(s, t, y, temp, alpha), expected, atol=1e-6)
    assert kd_loss(t, t, y, temp, alpha=1.0).abs() < 1e-6
    assert kd_loss(s, t, y, temp, alpha=1.0) > 0


def test_kd_temperature_squared_keeps_gradients_on_scale() -> None:
    """Without T^2 the soft term's gradient would shrink ~1/T^2; with it, it stays O(1)."""
    t, y = _logits(1), torch.zeros(6, dtype=torch.long)
    norms = []
    for temp in (2.0, 8.0, 32.0):
        s = _logits(0).requires_grad_(True)
        kd_loss(s, t, y, temperature=temp, alpha=1.0).backward()
        norms.append(float(s.grad.norm()))  # type: ignore[union-attr]
    # the gradient tends to (s - t) / (N * classes) scaled by T^0: bounded ratios, not 1/T^2 decay
    assert norms[2] / norms[0] > 0.2
    # and the teacher gets no gradient
    t2 = _logits(1).requires_grad_(True)
    kd_loss(_logits(0).requires_grad_(True), t2, y, alpha=1.0).backward()
    assert t2.grad is None


def test_kd_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(_logits(0), _logits(1), torch.zeros(6, dtype=torch.long), temperature=0.0)
    with pytest.raises(ValueError):
        DistillConfig(alpha=1.5)


def _loader(n: int = 48, batch: int = 8, seed: int = 1) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.arange(n) % 3
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=gen)


def test_distillation_pulls_the_student_towards_the_teacher() -> None:
    torch.manual_seed(0)
    teacher = build_model("testing:tiny-convnet", num_classes=3, in_channels=1).eval()
    student = build_model("testing:tiny-convnet", num_classes=3, in_channels=1)
    x = torch.cat([b for b, _ in _loader()])

    def gap() -> float:
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(student.eval()(x), 1), F.softmax(teacher(x), 1), reduction="batchmean"))

    before = gap()
    weights = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss_fn = distillation_loss(teacher, DistillConfig(temperature=2.0, alpha=1.0))
    fit(student, _loader(), TrainConfig(epochs=4, optimizer="adam", lr=1e-2, weight_decay=0.0), loss_fn=loss_fn)
    assert gap() < 0.5 * before
    assert not teacher.training
    assert all(torch.equal(v, weights[k]) for k, v in teacher.state_dict().items())  # the teacher never learns
    # ... and is not frozen as a side effect: a model copied from it later still trains (and prunes)
    assert all(p.requires_grad for p in teacher.parameters())


# --- resumable fit ------------------------------------------------------------------------------
CFG = TrainConfig(epochs=3, lr=0.05, seed=3)


class _Interrupt(Exception):
    pass


def _train(tmp: Path | None, resume: bool = False, stop_at_step: int | None = None) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("testing:tiny-residual", num_classes=3, in_channels=1)
    steps = [0]

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        steps[0] += 1
        if stop_at_step is not None and steps[0] == stop_at_step:
            raise _Interrupt
        return F.cross_entropy(m(x), y)

    fit(model, _loader(), CFG, loss_fn=loss_fn, checkpoint_dir=tmp, resume=resume)
    return model


def test_interrupted_fit_resumes_to_the_same_weights(tmp_path: Path) -> None:
    straight = _train(None)
    with pytest.raises(_Interrupt):
        _train(tmp_path, stop_at_step=6 + 3)  # 6 steps per epoch: dies in the middle of epoch 2
    assert [e for e, _ in list_states(tmp_path)] == [1]
    state = torch.load(tmp_path / "epoch-001.pt", weights_only=True)  # plain tensors and containers
    assert state["epoch"] == 1 and len(state["history"]) == 1
    resumed = _train(tmp_path, resume=True)
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e for e, _ in list_states(tmp_path)] == [1, 2, 3]
    # resuming a finished run only loads its weights
    again = _train(tmp_path, resume=True, stop_at_step=1)
    assert all(torch.equal(a[k], again.state_dict()[k]) for k in a)


def test_resume_refuses_another_config_and_bad_states(tmp_path: Path) -> None:
    _train(tmp_path)
    model = build_model("testing:tiny-residual", num_classes=3, in_channels=1)
    with pytest.raises(ConfigError, match="another|train config"):
        fit(model, _loader(), TrainConfig(epochs=5, lr=0.05, seed=3), checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="checkpoint_dir"):
        fit(model, _loader(), CFG, resume=True)
    (tmp_path / "epoch-004.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights_only"):
        fit(model, _loader(), CFG, checkpoint_dir=tmp_path, resume=True)


def test_keep_checkpoints_and_cpu_mixed_precision(tmp_path: Path) -> None:
    model = build_model("testing:tiny-convnet", num_classes=3, in_channels=1)
    fit(model, _loader(), CFG, checkpoint_dir=tmp_path, keep_checkpoints=1)
    assert [e for e, _ in list_states(tmp_path)] == [3]
    with pytest.raises(ConfigError, match="CUDA"):
        fit(model, _loader(), CFG, mixed_precision=True)


def test_load_train_config(tmp_path: Path) -> None:
    path = tmp_path / "ft.yaml"
    path.write_text("epochs: 2\nlr: 0.01\noptimizer: adamw\n")
    assert load_train_config(path) == TrainConfig(epochs=2, lr=0.01, optimizer="adamw")
    path.write_text("epochs: 2\nlearning_rate: 0.01\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_train_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")
