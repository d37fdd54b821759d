"""Shared fixtures for one-shot tests: zoo models with non-trivial BN statistics, tiny data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunepilot.models import build_model
from prunepilot.pruning import PruningSpace

INPUT = (3, 8, 8)  # small inputs: ResNet-20 ends at 2x2, MobileNetV2 at 1x1


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class Zoo:
    spec: str
    model: nn.Module
    example: torch.Tensor
    space: PruningSpace


def make_zoo(spec: str, num_classes: int = 4, seed: int = 0) -> Zoo:
    """A zoo model with random BN statistics/affines (so BN is not the identity), in eval mode."""
    torch.manual_seed(seed)
    model = build_model(spec, num_classes=num_classes, in_channels=INPUT[0]).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    example = torch.randn(1, *INPUT)
    return Zoo(spec, model, example, PruningSpace.build(model, example))


_CACHE: dict[str, Zoo] = {}


@pytest.fixture(params=["resnet20", "mobilenetv2"])
def zoo(request: pytest.FixtureRequest) -> Zoo:
    """ResNet-20 and MobileNetV2 of the zoo (built once per test session)."""
    spec = str(request.param)
    if spec not in _CACHE:
        _CACHE[spec] = make_zoo(spec)
    return _CACHE[spec]


def tiny_data(n: int = 48, num_classes: int = 4, seed: int = 0) -> TensorDataset:
    """Random images whose class is a simple function of the input (learnable in a few steps)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *INPUT, generator=gen)
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    return TensorDataset(x, y % num_classes)


def batches(ds: TensorDataset, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = ds.tensors
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def search_config(tmp_path: Path, strategy: str, settings: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A seconds-long search config: tiny-residual on digits, MACs as the (predicted) latency."""
    cfg: dict[str, Any] = {
        "name": "oneshot",
        "seed": 0,
        "model": {
            "spec": "testing:tiny-residual",
            "train": {"epochs": 2, "lr": 0.05, "seed": 0},
            "cache_dir": str(tmp_path / "cache"),
        },
        "data": {"name": "digits", "batch_size": 32, "val_size": 0.2, "calib_size": 64, "val_subset": 96},
        "device": {"name": "local-cpu", "latency_model": "macs", "settings": {"ms_per_unit": 1.0}, "batch_size": 1},
        "budget": {"fraction": 0.5},
        # budget fill off: these searches store exactly what the one-shot strategy reports
        "evaluation": {"lower_bound": 0.25, "bn_batches": 2, "fill_below": 0.0, "uniform_at_budget": False},
        "strategy": {"name": strategy, "evaluations": 4, "settings": settings},
        "ray": {"num_cpus": 2, "max_concurrent": 2, "cpus_per_trial": 1},
    }
    for dotted, value in changes.items():
        node = cfg
        parts = dotted.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg
