"""Apply a :class:`PruningPolicy` to a model: a new, physically smaller model.

Widths first (through the adapter, on the whole model), then each removed block of the pruned
copy is replaced by ``nn.Identity()`` (:mod:`prunepilot.pruning.depth`): the identity path then
carries the pruned residual width.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from prunepilot.errors import PruningError
from prunepilot.pruning import adapter, depth
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
    """Return a pruned copy of ``model`` whose groups have exactly ``policy.channels`` and whose
    ``policy.removed_blocks`` are ``nn.Identity()``.

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
            side)`` (``"out"``/``"in"``), for :func:`~prunepilot.pruning.reconstruct.reconstruct`
            (modules inside removed blocks are left out).

    Raises:
        PolicyError: the policy was made for another architecture (lists the groups that differ)
            or names a block the model cannot remove.
        PruningError: the pruned model does not have the widths the policy asked for, or removing
            its blocks changed the output shape.
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
    if policy.removed_blocks:
        _remove_blocks(pruned, policy.removed_blocks, example_inputs)
        if kept is not None:
            for key in [k for k in kept if any(depth.inside(k[0], b) for b in policy.removed_blocks)]:
                del kept[key]
    return pruned


def _remove_blocks(pruned: nn.Module, names: Sequence[str], example_inputs: Any) -> None:
    """Replace the blocks ``names`` by Identity; raise unless the output shapes stay the same."""
    inputs = adapter.example_tuple(example_inputs)
    before = _output_shapes(pruned, inputs)
    depth.remove_blocks(pruned, names)
    after = _output_shapes(pruned, inputs)
    if after != before:
        raise PruningError(
            f"removing blocks {list(names)} changed the output shapes from {before} to {after}; only blocks "
            "whose input and output shapes match can be removed (see PruningSpace.blocks)"
        )


def _output_shapes(model: nn.Module, inputs: tuple[Any, ...]) -> list[tuple[int, ...]]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(*inputs)
    finally:
        model.train(was_training)
    flat = out if isinstance(out, tuple | list) else (out,)
    return [tuple(t.shape) for t in flat if isinstance(t, torch.Tensor)]
