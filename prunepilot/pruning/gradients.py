"""Gradients for the data-dependent Torch-Pruning criteria, gathered on calibration batches.

``taylor`` (Molchanov et al. 2019) reads ``|w * dL/dw|`` from the parameters' ``.grad``, so one
backward pass per batch is enough. ``hessian`` (OBD's diagonal Fisher, ``w^2 * E[g^2]``) needs
squared *per-sample* gradients; Torch-Pruning's own ``accumulate_grad`` keys by name but stores
by parameter and keeps only the last sample, so they are accumulated here and handed to the
criterion object. The adapter (:mod:`prunepilot.pruning.adapter`) calls
:func:`prepare_data_dependent` before scoring.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from prunepilot.errors import PruningError
from prunepilot.pruning.selection import needs_data_message


def prepare_data_dependent(
    name: str, imp: Any, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    """Populate gradients (``taylor``) or accumulated squared gradients (``hessian``) for ``imp``.

    Raises:
        PruningError: no batches were given (the message lists the data-free criteria).
    """
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    model.eval()  # gradients only: BatchNorm statistics must not move
    model.zero_grad(set_to_none=True)
    if name == "hessian":
        accu: dict[nn.Parameter, torch.Tensor] = {}
        count: dict[nn.Parameter, int] = {}
        for x, y in batches:
            losses = loss_fn(model(x), y)
            for loss in losses:
                model.zero_grad(set_to_none=True)
                loss.backward(retain_graph=True)
                for p in model.parameters():
                    if p.grad is not None:
                        accu[p] = accu.get(p, torch.zeros_like(p)) + p.grad.detach() ** 2
                        count[p] = count.get(p, 0) + 1
        if not count:
            raise PruningError(needs_data_message("hessian"))
        imp._accu_grad, imp._counter = accu, count
        model.zero_grad(set_to_none=False)  # the criterion writes into existing .grad tensors
        return
    n = 0
    for x, y in batches:
        loss_fn(model(x), y).mean().backward()
        n += 1
    if n == 0:
        raise PruningError(needs_data_message("taylor"))
