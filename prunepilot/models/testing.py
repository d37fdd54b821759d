"""Tiny deterministic models and a task with a known pruning answer, for prunepilot's own tests.

They are test fixtures, not zoo models (:func:`~prunepilot.models.list_models` does not list
them, and importing :mod:`prunepilot.models` does not import this module); specs name them with
the ``testing:`` prefix, so tests, Ray workers and run folders build them like any model:

* ``testing:tiny-convnet``: four conv-BN-ReLU groups (8, 16, 16, 32 channels), two of them strided.
* ``testing:tiny-residual``: a residual add couples the stem convolution and a block's second
  convolution into one pruning group.
* ``testing:tiny-depthwise``: a depthwise-separable block (3x3 depthwise + 1x1 pointwise).
* ``testing:tiny-fragile``: ``tiny-convnet`` that fails at one width (``?fail_width=N``).
* ``testing:tiny-known-answer``: the model of :func:`make_known_answer_task` (``?seed=N`` selects
  the task; it needs ``num_classes=4, in_channels=1``).

They run in milliseconds on a CPU and are deterministic under ``torch.manual_seed``.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunepilot.errors import ModelSpecError
from prunepilot.models._registry import ModelBuilder


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(),
    ]


class TinyConvNet(nn.Module):
    """Four conv groups (``features.0/3/6/9``: 8, 16, 16, 32 channels), GAP, linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, 8),
            *_conv_bn_relu(8, 16, stride=2),
            *_conv_bn_relu(16, 16),
            *_conv_bn_relu(16, 32, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TinyResidual(nn.Module):
    """Stem (8 ch), a residual block whose add couples ``stem.0`` with ``block.3``, then 16 ch."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, 8))
        self.block = nn.Sequential(
            *_conv_bn_relu(8, 8),
            nn.Conv2d(8, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
        )
        self.relu = nn.ReLU()
        self.head_conv = nn.Sequential(*_conv_bn_relu(8, 16, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.relu(x + self.block(x))
        return self.classifier(torch.flatten(self.avgpool(self.head_conv(x)), 1))


class TinyDepthwise(nn.Module):
    """Stem (8 ch), depthwise 3x3 (``dw.0``, groups=8), pointwise 1x1 to 16 ch (``pw.0``)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, 8))
        self.dw = nn.Sequential(*_conv_bn_relu(8, 8, groups=8))
        self.pw = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.dw(self.stem(x)))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def tiny_convnet(num_classes: int = 10, in_channels: int = 3) -> TinyConvNet:
    """Four plain conv groups; the smallest useful model for pipeline tests."""
    return TinyConvNet(num_classes, in_channels)


def tiny_residual(num_classes: int = 10, in_channels: int = 3) -> TinyResidual:
    """A residual add couples two convolutions into one pruning group."""
    return TinyResidual(num_classes, in_channels)


def tiny_depthwise(num_classes: int = 10, in_channels: int = 3) -> TinyDepthwise:
    """A depthwise-separable block (depthwise channels move with their input group)."""
    return TinyDepthwise(num_classes, in_channels)


class TinyFragile(TinyConvNet):
    """:class:`TinyConvNet` whose forward raises when ``features.0`` has ``fail_width`` channels.

    A stand-in for a real model that breaks at some widths, so tests can check that a
    failing candidate is recorded as failed and the search goes on.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, fail_width: int = 5) -> None:
        super().__init__(num_classes, in_channels)
        self.fail_width = fail_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = self.features[0].out_channels
        if width == self.fail_width:
            raise RuntimeError(f"tiny-fragile: features.0 has {width} channels, the width it fails at")
        return super().forward(x)


def tiny_fragile(num_classes: int = 10, in_channels: int = 3, fail_width: int = 5) -> TinyFragile:
    """A test model that fails at one width of its first group (for fault-handling tests)."""
    return TinyFragile(num_classes, in_channels, fail_width)


# --------------------------------------------------------------------------- known-answer task

KNOWN_ANSWER_CLASSES = 4
"""Classes of the known-answer task (one per stripe pattern)."""

KNOWN_ANSWER_NOISE_WIDTH = 32
"""Channels of each free (``noise``) group; the essential groups have 4."""

_TRAIN_SIZE = 2048
_VAL_SIZE = 1024
_PIXEL_NOISE = 0.6


class KnownAnswerNet(nn.Module):
    """Two parallel branches, concatenated, averaged and classified.

    ``signal`` (groups ``signal.0`` and ``signal.3``, 4 channels each) carries the label;
    ``noise`` (groups ``noise.0`` and ``noise.3``, :data:`KNOWN_ANSWER_NOISE_WIDTH` channels
    each, most of the MACs) is wired to the head with zero weights.
    """

    def __init__(self, noise_width: int = KNOWN_ANSWER_NOISE_WIDTH) -> None:
        super().__init__()
        k = KNOWN_ANSWER_CLASSES
        self.signal = nn.Sequential(*_conv_bn_relu(1, k), *_conv_bn_relu(k, k))
        self.noise = nn.Sequential(*_conv_bn_relu(1, noise_width), *_conv_bn_relu(noise_width, noise_width))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(k + noise_width, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.signal(x), self.noise(x)], dim=1)
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def _patterns() -> torch.Tensor:
    """The four 8x8 class patterns (+-1): horizontal, vertical, checkerboard, diagonal."""
    i = torch.arange(8).view(8, 1).expand(8, 8)
    j = torch.arange(8).view(1, 8).expand(8, 8)
    return torch.stack([(-1.0) ** i, (-1.0) ** j, (-1.0) ** (i + j), (-1.0) ** ((i + j) // 2)]).float()


def _sample(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    patterns = _patterns()
    # every pattern at each of its 2x2 phase shifts: (class, shift_i, shift_j, 8, 8)
    shifted = torch.stack(
        [torch.stack([torch.roll(patterns, (si, sj), (1, 2)) for sj in (0, 1)], 1) for si in (0, 1)], 1
    )
    labels = torch.randint(0, KNOWN_ANSWER_CLASSES, (n,), generator=generator)
    amplitude = 0.5 + 0.5 * torch.rand(n, 1, 1, generator=generator)
    si = torch.randint(0, 2, (n,), generator=generator)
    sj = torch.randint(0, 2, (n,), generator=generator)
    images = amplitude * shifted[labels, si, sj] + _PIXEL_NOISE * torch.randn(n, 8, 8, generator=generator)
    return images.unsqueeze(1), labels


@torch.no_grad()
def _construct(model: KnownAnswerNet, train_x: torch.Tensor, train_y: torch.Tensor) -> None:
    patterns = _patterns()
    detectors = patterns[:, 3:6, 3:6] - patterns[:, 3:6, 3:6].mean(dim=(1, 2), keepdim=True)
    detectors = detectors / detectors.norm(dim=(1, 2), keepdim=True)
    cast(nn.Conv2d, model.signal[0]).weight.copy_(detectors.unsqueeze(1))
    relay = cast(nn.Conv2d, model.signal[3]).weight
    relay.zero_()
    for c in range(KNOWN_ANSWER_CLASSES):
        relay[c, c, 1, 1] = 1.0
    # Batch norm statistics as if the model had been calibrated on the training images.
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over one pass
    model.train()
    model(train_x)
    model.eval()
    for bn in norms:
        bn.momentum = 0.1
    # Ridge regression from the pooled signal features to +-1 targets gives the head.
    feats = torch.flatten(model.avgpool(model.signal(train_x)), 1)
    mean, std = feats.mean(0), feats.std(0)
    design = torch.cat([(feats - mean) / std, torch.ones(len(feats), 1)], 1)
    targets = 2 * nn.functional.one_hot(train_y, KNOWN_ANSWER_CLASSES).float() - 1
    gram = design.T @ design + 1e-3 * torch.eye(design.shape[1])
    solution = torch.linalg.solve(gram, design.T @ targets)
    k = KNOWN_ANSWER_CLASSES
    model.classifier.weight.zero_()
    model.classifier.weight[:, :k] = (solution[:k] / std[:, None]).T
    model.classifier.bias.copy_(solution[k] - (mean / std) @ solution[:k])


def make_known_answer_task(
    seed: int = 0,
) -> tuple[KnownAnswerNet, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], set[str], set[str]]:
    """Build a model and data whose right pruning answer is known by construction.

    Data: 1x8x8 images of one of four +-1 stripe patterns (horizontal, vertical, checkerboard,
    diagonal with period 4) at a random 2x2 phase shift and amplitude in [0.5, 1], plus Gaussian
    pixel noise (sigma 0.6); the label is the pattern. 2048 training and 1024 validation images.

    Model (:class:`KnownAnswerNet`), constructed, not trained:

    * ``signal.0``: 4 channels, channel ``c`` a zero-mean 3x3 matched filter of pattern ``c``;
    * ``signal.3``: 4 channels, a 3x3 identity relay (channel ``c`` passes channel ``c``);
    * ``noise.0``, ``noise.3``: 32 channels each with random weights (``torch.manual_seed(seed)``),
      holding most of the MACs; the head's weights on their channels are exactly zero;
    * every batch norm holds the statistics of one pass over the training images, so BN
      recalibration on this data changes little;
    * the head is a ridge regression of the pooled signal channels onto the one-hot labels.

    Consequences, checked in the tests: validation accuracy is about 100%; zeroing (or pruning)
    any or all channels of ``noise.0``/``noise.3`` leaves the logits unchanged; zeroing any one
    ``signal`` channel loses its class (about -25 points) and zeroing a whole ``signal`` group
    drops accuracy to chance (25%). The right policy under a latency budget is therefore to prune
    the noise groups as far as allowed and keep the signal groups whole.

    Args:
        seed: Seed of the data and of the noise branch's random weights.

    Returns:
        ``(model, (train_x, train_y), (val_x, val_y), essential_groups, free_groups)``; the model
        is in eval mode; groups are named by the convolution defining their output channels.
    """
    generator = torch.Generator().manual_seed(seed)
    train = _sample(_TRAIN_SIZE, generator)
    val = _sample(_VAL_SIZE, generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = KnownAnswerNet()
    _construct(model, *train)
    return model, train, val, {"signal.0", "signal.3"}, {"noise.0", "noise.3"}


def known_answer_dataset(seed: int = 0) -> tuple[TensorDataset, TensorDataset, int]:
    """The known-answer task's data as a user dataset for ``DataConfig(name=...)``.

    Use ``name="prunepilot.models.testing:known_answer_dataset"``; the data config's ``seed``
    selects the task. Returns ``(train, val-as-test, 4)``.
    """
    _, (train_x, train_y), (val_x, val_y), _, _ = make_known_answer_task(seed)
    return TensorDataset(train_x, train_y), TensorDataset(val_x, val_y), KNOWN_ANSWER_CLASSES


def tiny_known_answer(num_classes: int = KNOWN_ANSWER_CLASSES, in_channels: int = 1, seed: int = 0) -> KnownAnswerNet:
    """The constructed model of :func:`make_known_answer_task` for ``seed`` (4 classes, 1x8x8)."""
    if num_classes != KNOWN_ANSWER_CLASSES or in_channels != 1:
        raise ModelSpecError(
            f"tiny-known-answer is constructed for its own task: num_classes={KNOWN_ANSWER_CLASSES}, "
            f"in_channels=1 (got num_classes={num_classes}, in_channels={in_channels}); use the data "
            "'prunepilot.models.testing:known_answer_dataset' or make_known_answer_task()"
        )
    return make_known_answer_task(seed)[0]


FIXTURES: dict[str, ModelBuilder] = {
    "tiny-convnet": tiny_convnet,
    "tiny-residual": tiny_residual,
    "tiny-depthwise": tiny_depthwise,
    "tiny-fragile": tiny_fragile,
    "tiny-known-answer": tiny_known_answer,
}
"""The fixtures ``testing:NAME`` specs build (see :func:`prunepilot.models.build_model`)."""
