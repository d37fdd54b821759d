"""MobileNetV2 (Sandler et al. 2018) adapted to small inputs (28x28, 32x32).

The ImageNet network downsamples 32x; here the stem and the second stage use stride 1 (as in
common CIFAR ports), so the network downsamples 8x: 32x32 inputs end at 4x4, 28x28 at 4x4 and
8x8 at 1x1. Everything else follows the paper: inverted residual blocks (1x1 expansion, 3x3
depthwise, 1x1 linear projection), ReLU6, a residual add when stride is 1 and widths match, a
1280-channel last convolution and a linear head after global average pooling.
"""

from __future__ import annotations

import torch
from torch import nn

from prunepilot.errors import ModelSpecError
from prunepilot.models._registry import register_model

# (expansion t, output channels c, repeats n, first stride s) as in the paper's table 2, with
# the second row's stride changed from 2 to 1 for small inputs.
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going below 90% of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_bn_relu6(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Convolution (same padding, no bias), batch norm and ReLU6 as one ``Sequential``."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (3x3), project (1x1, linear); residual add when shapes match.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        stride: Stride of the depthwise convolution.
        expand_ratio: Hidden width as a multiple of ``in_ch``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu6(in_ch, hidden, 1))
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2Small(nn.Module):
    """MobileNetV2 with an 8x total downsampling, for 28x28 and 32x32 inputs.

    Args:
        num_classes: Output classes.
        in_channels: Input image channels.
        width_mult: Multiplier of every width (1.0 is the paper's network); the last
            convolution keeps 1280 channels unless ``width_mult > 1``.
        dropout: Dropout probability before the linear head.
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, dropout: float = 0.2
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ModelSpecError(f"mobilenetv2: width_mult must be > 0, got {width_mult!r}")
        in_ch = _make_divisible(32 * width_mult)
        self.last_channels = _make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [conv_bn_relu6(in_channels, in_ch, 3, stride=1)]
        for t, c, n, s in _SETTINGS:
            out_ch = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        layers.append(conv_bn_relu6(in_ch, self.last_channels, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channels, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> MobileNetV2Small:
    """MobileNetV2 for small inputs (stride-1 stem; 2.2M parameters at width 1.0, 10 classes)."""
    return MobileNetV2Small(num_classes, in_channels, width_mult)
