"""Shared fixtures: zoo models' pruning spaces (built once per session) with cheap evaluators."""

from __future__ import annotations

import pytest
import torch

from prunepilot.models import build_model
from prunepilot.pruning import PruningSpace


@pytest.fixture(scope="session")
def zoo_space() -> dict[str, PruningSpace]:
    """Pruning spaces of the zoo ResNet-20 and MobileNetV2 at CIFAR input size."""
    spaces = {}
    for name in ("resnet20", "mobilenetv2"):
        torch.manual_seed(0)
        spaces[name] = PruningSpace.build(build_model(name).eval(), torch.randn(1, 3, 32, 32))
    return spaces
