"""Channel criteria from the pruning literature beyond Torch-Pruning's built-in importances.

``grad-magnitude``, ``snip``, ``grasp``, ``synflow`` and ``thinet`` score every channel of a
dependency group; the adapter (:mod:`prunepilot.pruning.adapter`, the one module that talks to
Torch-Pruning) hands each group over as a :class:`GroupView` -- the group's layers with the
channel indices Torch-Pruning's index mapping gives them -- and prunes with Torch-Pruning as for
any other criterion. Higher scores keep. Three of the five are per-weight saliencies summed over
each channel's weights in every layer of the group (its rows in the producing layers, its
columns in the consuming layers, its norm-layer entries):

* ``grad-magnitude``: ``|dL/dw|``, averaged over the calibration batches.
* ``snip`` (Lee et al. 2019): connection sensitivity ``|w * dL/dw|`` on one mini-batch (the
  first calibration batch), as the paper computes it.
* ``grasp`` (Wang et al. 2020): GraSP scores ``S = -w * Hg`` (``H`` the Hessian, ``g`` the
  gradient, on logits divided by the paper's temperature 200) and removes the largest ``S``,
  whose removal reduces gradient flow least; the importance here is ``-S`` (signed).

Two need the whole network at once:

* ``synflow`` (Tanaka et al. 2020), data-free: on the network with absolute weights, ``R =
  sum(f(1))`` for the all-ones input; saliency ``|w * dR/dw|``. Iterative, as in the paper:
  over :data:`SYNFLOW_ROUNDS` rounds every group is masked down an exponential schedule to its
  target width and rescored, so a layer's score reflects the pruning elsewhere. Channels are
  ranked by the round they were masked in (survivors highest).
* ``thinet`` (Luo et al. 2017): the next layer's output is the sum of per-input-channel
  contributions; greedily remove the channel whose removal adds least squared error to that
  output on calibration data, then the next, and so on. The removal order is the ranking, so
  keeping the top ``k`` is exactly ThiNet's greedy choice at width ``k``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from prunepilot.errors import PruningError
from prunepilot.pruning import consumers

CRITERIA: dict[str, str] = {
    "grad-magnitude": "mean |dL/dw| of each channel's weights on calibration batches",
    "snip": "SNIP connection sensitivity |w * dL/dw| on one calibration mini-batch (Lee et al. 2019)",
    "grasp": "GraSP: keeps channels whose removal would most reduce gradient flow, w * Hg (Wang et al. 2020)",
    "synflow": "SynFlow, data-free: |w * dR/dw| with |weights| and an all-ones input, iterated (Tanaka et al. 2020)",
    "thinet": "ThiNet: greedily drops the channels the next layer's output least depends on (Luo et al. 2017)",
}
DATA_DEPENDENT = frozenset({"grad-magnitude", "snip", "grasp", "thinet"})

SYNFLOW_ROUNDS = 100
"""Prune-and-rescore rounds of ``synflow`` (the paper's 100)."""

GRASP_TEMPERATURE = 200.0
"""Logits are divided by this before GraSP's gradients (the paper's code's ``T``)."""

THINET_POSITIONS = 16
"""Output positions sampled per image (per consumer layer) for ``thinet``'s statistics."""

SCORED_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
)
"""Layers whose parameters a group's channel scores read."""

Side = Literal["out", "in"]
Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
KeepFn = Callable[[torch.Tensor, int, int], list[int]]


@dataclass(frozen=True)
class ChannelSlice:
    """One layer of a group: its channels ``idxs`` on ``side`` belong to group channels ``root_idxs``."""

    module: nn.Module
    side: Side
    idxs: tuple[int, ...]
    root_idxs: tuple[int, ...]


@dataclass(frozen=True)
class GroupView:
    """A dependency group as plain data: name, channel count, block multiple, its layers."""

    name: str
    channels: int
    blocks: int
    slices: tuple[ChannelSlice, ...]


def channel_scores(
    name: str,
    model: nn.Module,
    groups: Sequence[GroupView],
    *,
    batches: Batches,
    example_inputs: tuple[object, ...],
    widths: Mapping[str, int] | None,
    keep: KeepFn,
) -> dict[str, torch.Tensor]:
    """Scores (higher keeps) of every channel of every group under criterion ``name``.

    The model must be in the state the adapter's tracing gives it (autograd on, every
    ``requires_grad`` set); its parameters are unchanged afterwards and its gradients are
    left set (the caller clears them).

    Args:
        name: A key of :data:`CRITERIA`.
        model: The unpruned model.
        groups: The groups to score.
        batches: ``(inputs, targets)`` calibration batches (unused by ``synflow``).
        example_inputs: Positional example inputs (``synflow`` takes their shape).
        widths: Target widths per group (``synflow``'s schedule); None: each group's narrowest.
        keep: ``keep(scores, k, blocks)`` -> the indices the adapter keeps at width ``k``.
    """
    model.eval()  # scores only: batch-norm statistics must not move (the adapter restores modes)
    if name == "synflow":
        return _synflow(model, groups, example_inputs, widths, keep)
    if name == "thinet":
        return _thinet(model, groups, batches)
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; expected one of {sorted(CRITERIA)}")
    saliency = {"grad-magnitude": _grad_magnitude, "snip": _snip, "grasp": _grasp}[name](model, batches)
    return {g.name: aggregate(saliency, g) for g in groups}


# --------------------------------------------------------------------- per-weight saliencies


def aggregate(saliency: Mapping[int, torch.Tensor], group: GroupView) -> torch.Tensor:
    """Sum a per-parameter saliency (keyed by ``id(parameter)``) over each channel of ``group``."""
    total = torch.zeros(group.channels, dtype=torch.float64)
    for sl in group.slices:
        per = _per_channel(saliency, sl.module, sl.side)
        if per is None:
            continue
        values = per.detach().double().cpu()[list(sl.idxs)]
        total.index_add_(0, torch.tensor(sl.root_idxs, dtype=torch.long), values)
    return total


def _per_channel(saliency: Mapping[int, torch.Tensor], module: nn.Module, side: Side) -> torch.Tensor | None:
    """A layer's saliency summed over everything but the channel dimension of ``side``."""
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    s_w = saliency.get(id(weight)) if weight is not None else None
    s_b = saliency.get(id(bias)) if bias is not None else None
    if s_w is None:
        return None
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed and module.groups > 1:
            return None
        w = s_w.transpose(0, 1) if module.transposed else s_w  # (out, in / groups, *kernel)
        if side == "out":
            return w.flatten(1).sum(1) + (s_b if s_b is not None else 0)
        g = module.groups
        return w.reshape(g, w.shape[0] // g, w.shape[1], -1).sum((1, 3)).flatten()
    if isinstance(module, nn.Linear):
        if side == "in":
            return s_w.sum(0)
        return s_w.sum(1) + (s_b if s_b is not None else 0)
    return s_w.flatten() + (s_b.flatten() if s_b is not None else 0)  # norm layers: one entry per channel


def _params(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _grad_magnitude(model: nn.Module, batches: Batches) -> dict[int, torch.Tensor]:
    total: dict[int, torch.Tensor] = {}
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        for p in _params(model):
            if p.grad is not None:
                total[id(p)] = total.get(id(p), torch.zeros_like(p)) + p.grad.detach().abs()
    return {k: v / len(batches) for k, v in total.items()}


def _snip(model: nn.Module, batches: Batches) -> dict[int, torch.Tensor]:
    x, y = batches[0]
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return {id(p): (p.detach() * p.grad.detach()).abs() for p in _params(model) if p.grad is not None}


def _grasp(model: nn.Module, batches: Batches) -> dict[int, torch.Tensor]:
    params = _params(model)

    def grads(x: torch.Tensor, y: torch.Tensor, create_graph: bool) -> list[torch.Tensor]:
        loss = F.cross_entropy(model(x) / GRASP_TEMPERATURE, y)
        found = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, found, strict=True)]

    mean_g = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        for acc, g in zip(mean_g, grads(x, y, False), strict=True):
            acc += g.detach() / len(batches)
    hg = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        z = sum((g * c).sum() for g, c in zip(grads(x, y, True), mean_g, strict=True))
        if not isinstance(z, torch.Tensor) or not z.requires_grad:
            continue  # no second-order term reaches any weight: Hg = 0
        found = torch.autograd.grad(z, params, allow_unused=True)
        for acc, h in zip(hg, found, strict=True):
            if h is not None:
                acc += h.detach() / len(batches)
    return {id(p): p.detach() * h for p, h in zip(params, hg, strict=True)}


# ------------------------------------------------------------------------------- synflow


def _synflow(
    model: nn.Module,
    groups: Sequence[GroupView],
    example_inputs: tuple[object, ...],
    widths: Mapping[str, int] | None,
    keep: KeepFn,
) -> dict[str, torch.Tensor]:
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    saved = [t.data for t in tensors]
    ones = tuple(
        torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device) if isinstance(x, torch.Tensor) else x
        for x in example_inputs
    )
    targets = {g.name: int(widths[g.name]) if widths and g.name in widths else g.blocks for g in groups}
    alive = {g.name: torch.ones(g.channels, dtype=torch.bool) for g in groups}
    ranks = {g.name: torch.zeros(g.channels, dtype=torch.float64) for g in groups}
    try:
        with torch.no_grad():
            for t in tensors:
                t.data = t.data.abs().double()  # linearise: |weights|, |BN statistics|
        # only rounds in which some group's scheduled width drops need a rescoring (and the final one)
        steps = [r for r in range(1, SYNFLOW_ROUNDS + 1) if any(_drops(g, targets[g.name], r) for g in groups)]
        for r in [*steps, SYNFLOW_ROUNDS + 1]:
            model.zero_grad(set_to_none=True)
            torch.sum(model(*ones)).backward()
            saliency = {id(p): (p.detach() * p.grad.detach()).abs() for p in _params(model) if p.grad is not None}
            for g in groups:
                final = r > SYNFLOW_ROUNDS  # survivors of the last round rank above every masked channel
                width = g.blocks if final else _schedule(g, targets[g.name], r)
                if not final and width >= int(alive[g.name].sum()):
                    continue
                scores = aggregate(saliency, g)
                top = scores.max()
                unit = 0.5 * scores / top if top > 0 else scores  # within a round: (r, r + 0.5]
                if final:
                    ranks[g.name][alive[g.name]] = r + unit[alive[g.name]]
                    continue
                masked_scores = torch.where(alive[g.name], scores, torch.full_like(scores, -1.0))
                kept = torch.zeros(g.channels, dtype=torch.bool)
                kept[keep(masked_scores, width, g.blocks)] = True
                gone = alive[g.name] & ~kept
                ranks[g.name][gone] = r + unit[gone]
                alive[g.name] = kept
                _mask(g, gone)
    finally:
        model.zero_grad(set_to_none=True)
        for t, data in zip(tensors, saved, strict=True):
            t.data = data
    return ranks


def _drops(group: GroupView, target: int, r: int) -> bool:
    return _schedule(group, target, r) < _schedule(group, target, r - 1)


def _schedule(group: GroupView, target: int, r: int) -> int:
    """Width of ``group`` after round ``r``: exponential from full width to ``target``, block multiples."""
    width = group.channels * (target / group.channels) ** (r / SYNFLOW_ROUNDS)
    blocks = max(1, group.blocks)
    return max(target, min(group.channels, math.ceil(width / blocks - 1e-9) * blocks))


@torch.no_grad()
def _mask(group: GroupView, gone: torch.Tensor) -> None:
    """Zero the producing parameters of group channels ``gone``, so they carry no flow."""
    for sl in group.slices:
        if sl.side != "out":
            continue
        idx = [i for i, r in zip(sl.idxs, sl.root_idxs, strict=True) if gone[r]]
        if not idx:
            continue
        m = sl.module
        weight, bias = getattr(m, "weight", None), getattr(m, "bias", None)
        if isinstance(weight, torch.Tensor):
            if isinstance(m, nn.modules.conv._ConvNd) and m.transposed:
                weight[:, idx] = 0
            else:
                weight[idx] = 0
        if isinstance(bias, torch.Tensor):
            bias[idx] = 0


# -------------------------------------------------------------------------------- thinet


def _thinet(model: nn.Module, groups: Sequence[GroupView], batches: Batches) -> dict[str, torch.Tensor]:
    readers = {id(s.module): s.module for g in groups for s in g.slices if s.side == "in"}
    usable = {k: m for k, m in readers.items() if consumers.linear_features(m) is not None}
    grams: dict[int, torch.Tensor] = {}
    gens = {k: torch.Generator().manual_seed(0) for k in usable}

    def hook(key: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def gather(module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            g = contribution_gram(module, inputs[0].detach(), gens[key])
            grams[key] = grams[key] + g if key in grams else g

        return gather

    handles = [m.register_forward_hook(hook(k)) for k, m in usable.items()]
    try:
        with torch.no_grad():
            for x, _y in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
    found: dict[str, torch.Tensor] = {}
    for g in groups:
        gram = torch.zeros(g.channels, g.channels, dtype=torch.float64)
        for sl in g.slices:
            if sl.side != "in" or id(sl.module) not in grams:
                continue
            idx, root = torch.tensor(sl.idxs), torch.tensor(sl.root_idxs)
            sub = grams[id(sl.module)][idx][:, idx]
            energy = float(sub.diagonal().sum())
            if energy > 0:
                rows = torch.zeros(g.channels, len(idx), dtype=torch.float64).index_add_(0, root, sub / energy)
                gram.index_add_(1, root, rows)
        if not gram.abs().sum() > 0:
            reading = [repr(s.module) for s in g.slices if s.side == "in"][:3] or ["none"]
            raise PruningError(
                f"importance 'thinet' scores group {g.name!r} by the layers reading its channels, but none of "
                f"them ({'; '.join(reading)}) is a Conv2d with zero padding or a Linear with at most "
                f"{consumers.MAX_FEATURES} inputs x kernel elements that saw calibration data; choose another "
                "criterion for this model, e.g. 'taylor' or 'l1'"
            )
        found[g.name] = greedy_removal_order(gram)
    return found


def contribution_gram(module: nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``G[c, d] = sum over samples and outputs of contribution_c * contribution_d`` (float64, CPU).

    The contribution of input channel ``c`` to output ``o`` at one position is ``sum_k W[o,c,k]
    * patch[c,k]``; with ``A = patches^T patches`` and ``M = W^T W`` over all features,
    ``G[c, d] = sum_{k,k'} A[ck, dk'] * M[ck, dk']``.
    """
    positions = None
    if isinstance(module, nn.Conv2d):
        length = consumers.output_positions(module, x)
        if length > THINET_POSITIONS:
            positions = torch.randperm(length, generator=gen)[:THINET_POSITIONS].to(x.device)
    patches = consumers.sampled_patches(module, x, positions).double()
    w = consumers.dense_weight(module).double()
    channels = module.in_channels if isinstance(module, nn.Conv2d) else w.shape[1]
    kk = w.shape[1] // channels
    prod = (patches.T @ patches) * (w.T @ w)
    return prod.view(channels, kk, channels, kk).sum((1, 3)).cpu()


def greedy_removal_order(gram: torch.Tensor) -> torch.Tensor:
    """ThiNet's greedy order: step ``t`` removes the channel adding least error; score = ``t``.

    With ``gram`` the channels' contribution Gram matrix, the squared error of removing a set
    ``T`` is ``1^T G_TT 1``; adding ``j`` costs ``2 * sum_{i in T} G[i, j] + G[j, j]``.
    """
    n = gram.shape[0]
    removed = torch.zeros(n, dtype=torch.bool)
    cross = torch.zeros(n, dtype=torch.float64)
    scores = torch.zeros(n, dtype=torch.float64)
    diag = gram.diagonal()
    for step in range(n):
        cost = torch.where(removed, torch.full_like(cross, float("inf")), 2 * cross + diag)
        j = int(torch.argmin(cost))
        scores[j] = step
        removed[j] = True
        cross += gram[:, j]
    return scores
