"""Apply a :class:`PruningPolicy` to a model: a new, physically smaller model."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from prunepilot.pruning import adapter
from prunepilot.pruning.guard import Limits
from prunepilot.pruning.policy import PruningPolicy
from prunepilot.pruning.space import PruningSpace


def apply_policy(
    model: nn.Module,
    policy: PruningPolicy,
    example_inputs: Any,
    *,
    space: PruningSpace | None = None,
    importance: str | None = None,
    calib_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ignored_layers: Sequence[str] | None = None,
    limits: Limits | None = None,
    kept: adapter.KeptIndices | None = None,
) -> nn.Module:
    """Return a pruned copy of ``model`` whose groups have exactly ``policy.channels``.

    The input model is not modified. Channels are chosen by ``importance`` (default: the
    policy's criterion); the data-dependent ones (``adapter.DATA_DEPENDENT``) need ``calib_batches`` of
    ``(inputs, targets)``.

    Args:
        model: The trained model.
        policy: The policy; it must match the model's group structure.
        example_inputs: Inputs for tracing (one small batch).
        space: The model's :class:`PruningSpace`, if already built (saves one trace).
        importance: Override the policy's channel-selection criterion.
        calib_batches: Batches for data-dependent criteria.
        ignored_layers: Module names never to prune (default: those the space was built with).
        limits: Graph-analysis time/memory limits.
        kept: If given, filled with the indices each pruned module kept, per ``(module name,
            side)`` (``"out"``/``"in"``), for :func:`~prunepilot.pruning.reconstruct.reconstruct`.

    Raises:
        PolicyError: the policy was made for another architecture (lists the groups that differ).
        PruningError: the pruned model does not have the widths the policy asked for.
    """
    ignored = tuple(ignored_layers if ignored_layers is not None else (space.ignored if space else ()))
    if space is None:
        space = PruningSpace.build(model, example_inputs, ignored_layers=ignored, limits=limits)
    policy.check(space)
    pruned = copy.deepcopy(model)
    adapter.prune_to_widths(
        pruned,
        example_inputs,
        policy.channels,
        importance=importance or policy.importance,
        calib_batches=calib_batches,
        ignored=ignored,
        limits=limits,
        kept=kept,
    )
    return pruned
