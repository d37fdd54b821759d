"""The one prune -> recalibrate path every scorer uses: search evaluator, apply, prune, test envs.

A candidate is judged after BatchNorm recalibration (as EagleEye does): pruning shifts the
statistics the BN layers see, and re-estimating them on a few training batches makes pruned
models comparable without fine-tuning. :func:`prune_and_recalibrate` is that step, written once,
so the search's figure, ``prunepilot apply``'s "after pruning" figure and ``prunepilot prune``'s
report are the same computation on the same kind of batches. Score the result with
:func:`prunepilot.training.evaluate_accuracy` on held-out batches.

Example:
    >>> pruned = prune_and_recalibrate(model, policy, torch.zeros(1, 3, 32, 32), calib_batches=calib)  # doctest: +SKIP
    >>> evaluate_accuracy(pruned, val)                                                       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from prunepilot.pruning.apply import apply_policy
from prunepilot.pruning.bn import recalibrate_bn
from prunepilot.pruning.groups import KeptIndices
from prunepilot.pruning.policy import PruningPolicy
from prunepilot.pruning.space import PruningSpace

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
"""``(inputs, targets)`` batches, held in memory: they are read twice (channel scores, BN)."""


def prune_and_recalibrate(
    model: nn.Module,
    policy: PruningPolicy,
    example: Any,
    *,
    space: PruningSpace | None = None,
    calib_batches: Batches | None = None,
    importance: str | None = None,
    kept: KeptIndices | None = None,
    before_recalibration: Callable[[nn.Module], object] | None = None,
) -> nn.Module:
    """A pruned copy of ``model`` with exactly ``policy.channels``, BN-recalibrated, in eval mode.

    :func:`~prunepilot.pruning.apply_policy` (channels chosen by ``importance``, default the
    policy's; the data-dependent criteria score on ``calib_batches``), then
    :func:`~prunepilot.pruning.recalibrate_bn` on ``calib_batches`` when there are any (without
    batches the pruned BN layers keep their old statistics). ``model`` is not modified.

    Args:
        model: The trained model.
        policy: The policy; it must match the model's group structure.
        example: Inputs for tracing (one small batch).
        space: The model's pruning space, if already built (saves one trace).
        calib_batches: Calibration batches (a subset of the training data, never val or test).
        importance: Override the policy's channel-selection criterion.
        kept: Filled with the indices each pruned module kept (see :func:`apply_policy`).
        before_recalibration: Called with the pruned model before its BN statistics are
            re-estimated (e.g. to report the accuracy without recalibration).

    Raises:
        PolicyError: the policy was made for another architecture.
        PruningError: the pruned model does not have the widths the policy asked for.
    """
    pruned = apply_policy(
        model, policy, example, space=space, importance=importance, calib_batches=calib_batches, kept=kept
    )
    if before_recalibration is not None:
        before_recalibration(pruned)
    if calib_batches:
        recalibrate_bn(pruned, calib_batches)
    return pruned.eval()
