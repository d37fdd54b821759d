"""Pruning core on the zoo and torchvision models: exactness, widths, analytic costs, save/load."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy, count_macs_params

ZOO = [
    ("resnet20", 3, 32),
    ("resnet56", 3, 32),
    ("mobilenetv2", 3, 32),
    ("vgg11s", 3, 32),
    ("simplecnn", 1, 8),
]
TORCHVISION = [
    ("torchvision:resnet18", 64),
    ("torchvision:resnet50", 64),
    ("torchvision:mobilenet_v2", 64),
    ("torchvision:mobilenet_v3_small", 64),
    ("torchvision:efficientnet_b0", 64),
    ("torchvision:regnet_x_400mf", 64),
    ("torchvision:vit_b_16?image_size=32", 32),
]
CASES = [(s, c, h) for s, c, h in ZOO] + [(s, 3, h) for s, h in TORCHVISION]


def _group_width(model: nn.Module, name: str) -> int:
    m = dict(model.named_modules())[name]
    return int(getattr(m, "out_channels", getattr(m, "out_features", 0)))


@pytest.mark.parametrize("spec,channels,size", CASES, ids=[c[0] for c in CASES])
def test_policies_on_model(spec: str, channels: int, size: int, tmp_path) -> None:
    model = build_model(spec, num_classes=10, in_channels=channels).eval()
    x = torch.randn(2, channels, size, size)
    space = PruningSpace.build(model, x)
    assert len(space.groups) >= 2
    # keep-ratio 1.0 reproduces the original exactly
    same = apply_policy(model, PruningPolicy.uniform(space, 1.0), x, space=space)
    assert (same(x) - model(x)).abs().max().item() <= 1e-5
    rng = random.Random(1)
    for _trial in range(2):
        policy = PruningPolicy.from_ratios(space, [rng.uniform(0.05, 1.0) for _ in space.groups])
        pruned = apply_policy(model, policy, x, space=space)
        y = pruned(x)
        assert y.shape == (2, 10)
        for g in space.groups:
            assert _group_width(pruned, g.name) == policy.channels[g.name]
        macs, params = count_macs_params(pruned, x)
        assert abs(space.macs(policy.channels) - macs) <= 0.01 * macs
        assert abs(space.params(policy.channels) - params) <= 0.01 * params
        assert macs < space.base_macs or policy.mean_keep() == 1.0
    # the input model is untouched
    assert count_macs_params(model, x) == (space.base_macs, space.base_params)


@pytest.mark.parametrize("spec,channels,size", [CASES[0], CASES[2], CASES[5]], ids=["resnet20", "mbv2", "tv-resnet18"])
def test_save_load_pruned_reproduces_outputs(spec: str, channels: int, size: int, tmp_path) -> None:
    from prunepilot.pruning.io import load_pruned, save_pruned

    model = build_model(spec, num_classes=10, in_channels=channels).eval()
    x = torch.randn(2, channels, size, size)
    space = PruningSpace.build(model, x)
    policy = PruningPolicy.uniform(space, 0.4)
    pruned = apply_policy(model, policy, x, space=space).eval()
    save_pruned(
        tmp_path / "out",
        pruned,
        policy,
        spec=spec,
        num_classes=10,
        in_channels=channels,
        input_shape=(1, channels, size, size),
    )
    again = load_pruned(tmp_path / "out").eval()
    assert torch.equal(again(x), pruned(x))


def test_analytic_costs_are_fast_and_exact_for_uniform() -> None:
    model = build_model("resnet56", num_classes=10, in_channels=3)
    x = torch.randn(1, 3, 32, 32)
    space = PruningSpace.build(model, x)
    full = space.full_widths()
    assert space.macs(full) == space.base_macs
    assert space.params(full) == space.base_params
    half = PruningPolicy.uniform(space, 0.5).channels
    # roughly quadratic in width for a plain conv net
    assert 0.2 < space.macs(half) / space.base_macs < 0.35
    layers = space.layers(half)
    assert sum(layer.macs for layer in layers) == space.macs(half)
