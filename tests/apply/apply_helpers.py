"""Helpers shared by the apply tests (a uniquely named module: tests/apply is on sys.path)."""

from __future__ import annotations

import random

import torch
from torch import nn

from prunepilot.pruning import PruningPolicy, PruningSpace, recalibrate_bn


def calibrated(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """``model`` in eval mode with BN statistics from random inputs, so outputs are O(1)
    (randomly initialised deep nets otherwise output ~1e-10, which any tolerance accepts)."""
    gen = torch.Generator().manual_seed(seed)
    recalibrate_bn(model, [torch.randn(8, *shape[1:], generator=gen) for _ in range(2)])
    return model.eval()


def random_policy(space: PruningSpace, seed: int, low: float = 0.3, **kwargs: object) -> PruningPolicy:
    """Keep ratios drawn uniformly from [low, 1] per group."""
    rng = random.Random(seed)
    return PruningPolicy.from_ratios(space, [rng.uniform(low, 1.0) for _ in space.groups], **kwargs)  # type: ignore[arg-type]
