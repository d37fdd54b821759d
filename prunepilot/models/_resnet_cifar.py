"""CIFAR-style ResNets (He et al. 2016, "Deep Residual Learning", section 4.2).

Three stages of ``n`` basic blocks with 16, 32 and 64 channels; depth ``6n + 2`` (resnet20: n=3,
resnet32: n=5, resnet56: n=9). Unlike the paper's option A (zero-padded identity), shortcuts that
change shape are option B: a 1x1 strided convolution with batch norm, so that every layer is a
real module that pruning and latency models can see. Global average pooling before the head makes
any input of at least 8x8 work (8x8, 28x28, 32x32).
"""

from __future__ import annotations

import torch
from torch import nn

from prunepilot.models._registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual add; 1x1 conv-BN shortcut when shapes change.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution (and of the shortcut).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """CIFAR ResNet of depth ``6 * blocks_per_stage + 2``.

    Args:
        blocks_per_stage: Basic blocks in each of the three stages.
        num_classes: Output classes.
        in_channels: Input image channels.
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        in_planes = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3) -> ResNetCifar:
    """ResNet-20 for CIFAR-sized inputs (0.27M parameters)."""
    return ResNetCifar(3, num_classes, in_channels)


@register_model("resnet32")
def resnet32(num_classes: int = 10, in_channels: int = 3) -> ResNetCifar:
    """ResNet-32 for CIFAR-sized inputs (0.46M parameters)."""
    return ResNetCifar(5, num_classes, in_channels)


@register_model("resnet56")
def resnet56(num_classes: int = 10, in_channels: int = 3) -> ResNetCifar:
    """ResNet-56 for CIFAR-sized inputs (0.85M parameters)."""
    return ResNetCifar(9, num_classes, in_channels)
