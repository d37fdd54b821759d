"""BatchNorm recalibration after pruning (as EagleEye, Li et al. ECCV 2020, does).

Removing channels shifts the statistics the following BatchNorm layers see; re-estimating
running mean and variance on a few training batches recovers much of the accuracy a pruned
candidate would otherwise lose, and makes candidates comparable without fine-tuning.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def recalibrate_bn(model: nn.Module, batches: Iterable[Any], max_batches: int | None = None) -> int:
    """Re-estimate every BatchNorm's running statistics on ``batches``; returns batches used.

    Statistics are reset and then averaged over the batches (cumulative moving average);
    only BatchNorm layers are put in train mode, so dropout and the like stay off. All modes
    and momenta are restored afterwards. Models without BatchNorm are left unchanged.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in bns}
    model.eval()
    for bn in bns:
        if bn.track_running_stats:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
    used = 0
    try:
        with torch.no_grad():
            for batch in batches:
                if max_batches is not None and used >= max_batches:
                    break
                inputs = batch[0] if isinstance(batch, tuple | list) else batch
                model(inputs)
                used += 1
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        for m, mode in modes.items():
            m.train(mode)
    return used
