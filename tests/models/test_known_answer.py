"""The known-answer task: free groups are free to prune, essential groups are not."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunepilot.errors import ModelSpecError
from prunepilot.models import build_model
from prunepilot.models.testing import KNOWN_ANSWER_CLASSES, make_known_answer_task


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _zero_channels(model: nn.Module, group: str, channels: list[int] | None = None) -> nn.Module:
    """Copy of ``model`` with the group's output channels removed in effect: the conv's filters
    and the following BN's scale and shift are zeroed, so those channels output exactly 0."""
    model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    parent, index = group.rsplit(".", 1)
    conv, bn = modules[group], modules[f"{parent}.{int(index) + 1}"]
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
    idx = torch.arange(conv.out_channels) if channels is None else torch.tensor(channels)
    with torch.no_grad():
        conv.weight[idx] = 0
        bn.weight[idx] = 0
        bn.bias[idx] = 0
    return model


@pytest.fixture(scope="module")
def task():
    return make_known_answer_task(seed=0)


def test_base_model_solves_the_task(task) -> None:
    model, train, val, essential, free = task
    assert not model.training
    assert train[0].shape == (2048, 1, 8, 8) and val[0].shape == (1024, 1, 8, 8)
    assert _accuracy(model, *val) >= 0.98
    assert essential == {"signal.0", "signal.3"} and free == {"noise.0", "noise.3"}
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert essential | free == convs


def test_zeroing_free_groups_costs_nothing(task) -> None:
    model, _, (x, y), _, free = task
    base = _accuracy(model, x, y)
    pruned = model
    for group in sorted(free):
        pruned = _zero_channels(pruned, group)
    assert abs(_accuracy(pruned, x, y) - base) <= 0.02
    with torch.no_grad():
        assert torch.allclose(pruned(x), model(x))


def test_zeroing_essential_groups_drops_accuracy_by_more_than_30_points(task) -> None:
    model, _, (x, y), essential, _ = task
    base = _accuracy(model, x, y)
    for group in sorted(essential):
        assert _accuracy(_zero_channels(model, group), x, y) < base - 0.30, group
        # every single essential channel carries one class
        for channel in range(KNOWN_ANSWER_CLASSES):
            assert _accuracy(_zero_channels(model, group, [channel]), x, y) < base - 0.15, (group, channel)


def test_batch_norm_recalibration_keeps_the_answer(task) -> None:
    model, _, (x, y), _, _ = task
    recalibrated = copy.deepcopy(model)
    for bn in recalibrated.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None
    recalibrated.train()
    with torch.no_grad():
        for batch in x[:512].split(128):
            recalibrated(batch)
    recalibrated.eval()
    assert _accuracy(recalibrated, x, y) >= 0.97


def test_task_is_deterministic_per_seed_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    a = make_known_answer_task(1)
    assert torch.equal(torch.rand(1), expected_next)
    b = make_known_answer_task(1)
    c = make_known_answer_task(2)
    assert torch.equal(a[1][0], b[1][0]) and torch.equal(a[2][1], b[2][1])
    assert all(torch.equal(v, b[0].state_dict()[k]) for k, v in a[0].state_dict().items())
    assert not torch.equal(a[1][0], c[1][0])


def test_zoo_entry_matches_the_task_and_rejects_other_shapes(task) -> None:
    model = build_model("testing:tiny-known-answer?seed=0", num_classes=4, in_channels=1)
    assert all(torch.equal(v, task[0].state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(ModelSpecError, match=r"'testing:tiny-known-answer'.*num_classes=4, in_channels=1"):
        build_model("testing:tiny-known-answer")
