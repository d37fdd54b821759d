"""The supernet on zoo ResNet-20 and MobileNetV2: full width, policy widths, export, errors."""

from __future__ import annotations

import pytest
import torch
from oneshot_helpers import Zoo
from torch import nn

from prunepilot.oneshot import Supernet, SupernetError, WidthGrid
from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy, count_macs_params


@pytest.fixture
def supernet(zoo: Zoo) -> Supernet:
    return Supernet.build(zoo.model, zoo.example, space=zoo.space, importance="l1")


def test_full_width_reproduces_the_original_model(zoo: Zoo, supernet: Supernet) -> None:
    x = torch.randn(4, *zoo.example.shape[1:])
    with torch.no_grad(), supernet.at(zoo.space.full_widths()):
        got = supernet(x)
    ref = zoo.model(x)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4)
    assert supernet.macs(zoo.space.full_widths()) == zoo.space.base_macs


@pytest.mark.parametrize("seed", [0, 1])
def test_policy_widths_match_apply_policy(zoo: Zoo, supernet: Supernet, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    grid = WidthGrid.from_space(zoo.space, 0.2)
    widths = grid.random(gen)
    policy = grid.policy(zoo.space, widths, "l1")
    pruned = apply_policy(zoo.model, policy, zoo.example, space=zoo.space).eval()
    x = torch.randn(3, *zoo.example.shape[1:])
    with torch.no_grad(), supernet.at(policy.channels):
        got = supernet(x)
        ref = pruned(x)
    assert got.shape == ref.shape
    # Same importance on the same (base) weights: the leading channels are the ones apply_policy keeps.
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4)
    macs = supernet.macs(policy.channels)
    assert macs == zoo.space.macs(policy.channels) == count_macs_params(pruned, zoo.example)[0]
    assert macs < zoo.space.base_macs


def test_export_carries_trained_weights(zoo: Zoo, supernet: Supernet) -> None:
    """After 'training' (perturbed weights), export == supernet at those widths, shapes == apply_policy's."""
    sup = Supernet.build(zoo.model, zoo.example, space=zoo.space, verify=False)
    with torch.no_grad():
        for p in sup.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    widths = PruningPolicy.uniform(zoo.space, 0.4).channels
    calib = [(torch.randn(8, *zoo.example.shape[1:]), torch.zeros(8, dtype=torch.long))]
    sup.recalibrate(widths, calib)
    exported = sup.export(widths)
    x = torch.randn(3, *zoo.example.shape[1:])
    sup.model.eval()
    with torch.no_grad(), sup.at(widths):
        assert torch.allclose(sup(x), exported(x), atol=1e-5, rtol=1e-4)
    reference = apply_policy(zoo.model, PruningPolicy.uniform(zoo.space, 0.4), zoo.example, space=zoo.space)
    shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in exported.state_dict().items()}
    assert PruningSpace.build(exported, zoo.example).base_macs == zoo.space.macs(widths)
    # The base model is untouched by building, training and exporting.
    fresh = Supernet.build(zoo.model, zoo.example, space=zoo.space, verify=False)
    with torch.no_grad():
        assert torch.allclose(zoo.model(x), fresh(x), atol=1e-5, rtol=1e-4)


def test_search_scoring_trains_nothing(zoo: Zoo, supernet: Supernet) -> None:
    before = {k: v.clone() for k, v in supernet.model.named_parameters()}
    data = [(torch.randn(8, *zoo.example.shape[1:]), torch.randint(0, 4, (8,)))]
    score = supernet.score(PruningPolicy.uniform(zoo.space, 0.5).channels, data, data)
    assert 0.0 <= score.accuracy <= 1.0 and score.loss > 0
    assert all(torch.equal(before[k], v) for k, v in supernet.model.named_parameters())


class _Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b(self.a(x)).mean((2, 3)))


class _LayerNormed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.a(x)))


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(14, 5, 1)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.c(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3)))


class _Flatten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc, self.head = nn.Linear(8 * 16, 12), nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))))


def test_flatten_into_linear_keeps_channel_blocks() -> None:
    model, example = _Flatten().eval(), torch.randn(1, 3, 4, 4)
    space = PruningSpace.build(model, example)
    sup = Supernet.build(model, example, space=space)
    policy = PruningPolicy.from_ratios(space, {"conv": 0.5, "fc": 0.75})
    pruned = apply_policy(model, policy, example, space=space).eval()
    x = torch.randn(5, 3, 4, 4)
    with torch.no_grad(), sup.at(policy.channels):
        assert torch.allclose(sup(x), pruned(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("model", "example", "match"),
    [
        (_Grouped(), torch.randn(1, 3, 8, 8), "blocks"),
        (_LayerNormed(), torch.randn(1, 6), "LayerNorm"),
        (_Concat(), torch.randn(1, 3, 4, 4), "concatenation"),
    ],
)
def test_unsupported_layers_are_named(model: nn.Module, example: torch.Tensor, match: str) -> None:
    with pytest.raises(SupernetError, match=match):
        Supernet.build(model.eval(), example)
