"""Tiny models, hand-made layer shapes and a fast protocol, for tests of hardware models.

Example:
    >>> from prunepilot.hw_models.testing import FAST, tiny_net
    >>> FAST.min_runs
    5
"""

from __future__ import annotations

import torch
from torch import nn

from prunepilot.hw_models.layer_trace import conv_shape, linear_shape
from prunepilot.hw_models.measure import MeasureProtocol
from prunepilot.pruning.layers import LayerShape

#: A fast protocol for tests: few runs, no minimum time, one thread.
FAST = MeasureProtocol(warmup=1, min_runs=5, max_runs=50, min_seconds=0.0, max_attempts=2)


def tiny_net(width: int = 8, classes: int = 4) -> nn.Module:
    """conv-BN-ReLU, depthwise, pointwise, GAP, linear (eval mode): well under a millisecond."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, classes),
    ).eval()


def toy_layers(c: int = 16, hw: int = 8) -> list[LayerShape]:
    """A hand-made three-layer model: conv 3->c, conv c->2c (stride 2), linear 2c->10."""
    return [
        conv_shape("conv1", 3, c, 1, (3, 3), (1, 1), (hw, hw), (hw, hw)),
        conv_shape("conv2", c, 2 * c, 1, (3, 3), (2, 2), (hw, hw), (hw // 2, hw // 2)),
        linear_shape("fc", 2 * c, 10),
    ]
