"""A small VGG-11 with batch norm for 8x8 to 32x32 inputs.

VGG-11's eight 3x3 convolutions (Simonyan and Zisserman 2015, configuration A) at half width
(32, 64, 128, 128, 256, 256, 256, 256), each followed by batch norm and ReLU, with three 2x2
max-pools instead of five so an 8x8 input still has a 1x1 map at the end. Global average pooling
and a single linear layer replace the three fully connected layers, so any input size of at least
8x8 works.
"""

from __future__ import annotations

import torch
from torch import nn

from prunepilot.errors import ModelSpecError
from prunepilot.models._registry import register_model

# Output channels of each conv; "M" is a 2x2 max-pool.
_LAYOUT: tuple[int | str, ...] = (32, "M", 64, "M", 128, 128, "M", 256, 256, 256, 256)


class VGGSmall(nn.Module):
    """VGG-11 layout at half width with BN, three max-pools and a global-average-pool head.

    Args:
        num_classes: Output classes.
        in_channels: Input image channels.
        width_mult: Multiplier of every convolution width (rounded, at least 1 channel).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ModelSpecError(f"vgg11s: width_mult must be > 0, got {width_mult!r}")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in _LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            width = max(1, round(int(item) * width_mult))
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
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model("vgg11s")
def vgg11s(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> VGGSmall:
    """Small VGG-11 with BN and a global-average-pool head (any input of at least 8x8)."""
    return VGGSmall(num_classes, in_channels, width_mult)
