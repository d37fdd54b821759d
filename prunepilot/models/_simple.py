"""``simplecnn``: the demo's default model, a plain CNN sized so pruning it pays off on a CPU.

Four 3x3 convolutions (64, 128, 128, 256 channels), each with batch norm and ReLU, and no
pooling until a global average pool before the linear head. Keeping the full resolution makes
the network compute-bound even on 8x8 digits (about 33M multiply-accumulates per 8x8 sample),
so removing channels gives speed-ups that a wall clock can measure, not only fewer MACs.
"""

from __future__ import annotations

import torch
from torch import nn

from prunepilot.errors import ModelSpecError
from prunepilot.models._registry import register_model

_WIDTHS: tuple[int, ...] = (64, 128, 128, 256)


class SimpleCNN(nn.Module):
    """Conv-BN-ReLU x4 at full resolution, global average pool, linear head.

    Module names: ``features.0`` (conv), ``features.1`` (BN), ``features.2`` (ReLU), then
    ``features.3``, ``features.6`` and ``features.9`` for the other convolutions; ``classifier``.

    Args:
        num_classes: Output classes.
        in_channels: Input image channels.
        width_mult: Multiplier of every convolution width (rounded, at least 1 channel).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ModelSpecError(f"simplecnn: width_mult must be > 0, got {width_mult!r}")
        layers: list[nn.Module] = []
        channels = in_channels
        for base in _WIDTHS:
            width = max(1, round(base * width_mult))
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model("simplecnn")
def simplecnn(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> SimpleCNN:
    """The demo CNN: conv 64-128-128-256 (3x3, BN, ReLU), no pooling, GAP, linear head."""
    return SimpleCNN(num_classes, in_channels, width_mult)
