"""Reconstruction after pruning (He et al. ICCV 2017; ThiNet, Luo et al. ICCV 2017).

Removing a group's channels changes the output of every layer that reads them (its
*consumers*). Reconstruction refits each consumer's weights by least squares so that, on
calibration images, its output matches the unpruned model's, in closed form:

    min_W  sum ||X_pruned W^T - Y_base||^2 + ridge * mean(diag(X^T X)) * ||W||^2

where ``X_pruned`` are the consumer's inputs in the pruned model (im2col patches for a Conv2d)
and ``Y_base`` the same layer's outputs in the unpruned model (pre-activation, before any
batch norm), at the kept output channels. Consumers are refit one after another in forward
order, so each sees the inputs its already-refit predecessors produce. The unpruned model's
batch-norm statistics are restored first, and after each refit every batch norm is re-estimated
on the calibration batches, so the next consumer is fit on the inputs the returned model gives it
(the normalisation of the layers before it is final). Re-estimating only once at the end instead
leaves every consumer fit on inputs normalised by the unpruned model's statistics, which a
least-squares fit does not reproduce (it shrinks the output's variance): on MobileNetV2 at keep
0.12 that end-only recalibration undid the reconstruction (held-out 0.12 against 0.54 here).

Only the calibration batches the caller passes are read (in prunepilot: ``DataBundle.calib``,
a subset of the training split); nothing here sees a validation or test split.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import nn

from prunepilot.errors import PruningError
from prunepilot.pruning.bn import recalibrate_bn
from prunepilot.pruning.consumers import dense_weight, linear_features, ridge_solve, sampled_patches

RIDGE = 1e-4
"""Ridge term, relative to the mean diagonal of ``X^T X`` (keeps rank-deficient fits well posed)."""

POSITIONS = 64
"""Output positions sampled per image for each convolution's fit."""


@dataclass(frozen=True)
class LayerFit:
    """One refit consumer: squared error of its output vs the unpruned model's, relative to
    the unpruned output's energy, on the calibration samples, before and after the fit."""

    module: str
    error_before: float
    error_after: float
    refit: bool  # False: the fit did not lower the error (or was not finite); weights kept


@dataclass(frozen=True)
class Reconstruction:
    """What :func:`reconstruct` did: the layers refit, those left alone, BN batches used."""

    layers: tuple[LayerFit, ...]
    skipped: tuple[str, ...]
    bn_batches: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record (for reports)."""
        return {
            "layers": [asdict(f) for f in self.layers],
            "skipped": list(self.skipped),
            "bn_batches": self.bn_batches,
        }


_Layer = nn.Conv2d | nn.Linear


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has run."""


def reconstruct(
    pruned: nn.Module,
    base: nn.Module,
    calib_batches: Iterable[Any],
    kept: Mapping[tuple[str, str], tuple[int, ...]],
    *,
    ridge: float = RIDGE,
    positions: int = POSITIONS,
    seed: int = 0,
) -> Reconstruction:
    """Refit, **in place**, each consumer of pruned channels in ``pruned`` to ``base``'s outputs.

    Args:
        pruned: The pruned model (``apply_policy`` of ``base``); modified in place.
        base: The unpruned model it was pruned from (module names must match); not modified.
        calib_batches: Calibration batches, ``(inputs, targets)`` or inputs (targets unused).
        kept: The indices each module kept (``apply_policy(..., kept=kept)`` fills it).
        ridge: Ridge term relative to the mean diagonal of ``X^T X``.
        positions: Output positions sampled per image for convolutions.
        seed: Seed of the sampled positions.

    Returns:
        A :class:`Reconstruction` record. Consumers that are not ``Conv2d`` (zero padding,
        ``groups == 1``) or ``Linear`` are listed in ``skipped`` and left unchanged.

    Raises:
        PruningError: no calibration batches, or ``kept`` names modules ``pruned`` lacks.
    """
    batches = [b[0] if isinstance(b, tuple | list) else b for b in calib_batches]
    if not batches:
        raise PruningError("reconstruction needs calibration batches; none were given (pass the calibration split)")
    mods, base_mods = dict(pruned.named_modules()), dict(base.named_modules())
    unknown = sorted({name for name, _ in kept if name not in mods or name not in base_mods})
    if unknown:
        raise PruningError(f"kept indices name modules {unknown[:10]} that the pruned or base model lacks")
    consumers = [name for (name, side) in kept if side == "in"]
    usable = [n for n in consumers if _refittable(mods[n])]
    skipped = tuple(sorted(set(consumers) - set(usable)))
    modes = {m: m.training for m in (*pruned.modules(), *base.modules())}
    pruned.eval()
    base.eval()
    fits = []
    used = 0
    try:
        _restore_base_bn(pruned, base, kept)
        for name in _forward_order(pruned, usable, batches[0].to(next(pruned.parameters()).device)):
            layer = cast(_Layer, mods[name])
            fits.append(_refit(name, layer, base_mods[name], pruned, base, batches, kept, ridge, positions, seed))
            used = recalibrate_bn(pruned, batches)  # the later consumers are fit on their final inputs
    finally:
        for m, mode in modes.items():
            m.train(mode)
    if not fits:  # nothing refit: the statistics are still the unpruned model's
        used = recalibrate_bn(pruned, batches)
    return Reconstruction(layers=tuple(fits), skipped=skipped, bn_batches=used)


def _refittable(module: nn.Module) -> bool:
    conv_ok = isinstance(module, nn.Conv2d) and module.groups == 1
    return (conv_ok or isinstance(module, nn.Linear)) and linear_features(module) is not None


def _forward_order(model: nn.Module, names: list[str], x: torch.Tensor) -> list[str]:
    """``names`` in the order their modules first run in a forward pass."""
    order: list[str] = []
    mods = dict(model.named_modules())
    handles = [
        mods[n].register_forward_hook(lambda *_a, n=n: order.append(n) if n not in order else None) for n in names
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return order + [n for n in names if n not in order]


@torch.no_grad()
def _restore_base_bn(pruned: nn.Module, base: nn.Module, kept: Mapping[tuple[str, str], tuple[int, ...]]) -> None:
    base_mods = dict(base.named_modules())
    for name, bn in pruned.named_modules():
        src = base_mods.get(name)
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not isinstance(src, type(bn)):
            continue
        if bn.running_mean is None or src.running_mean is None or src.running_var is None:
            continue
        idx = torch.tensor(kept.get((name, "out"), range(src.num_features)), dtype=torch.long)
        if len(idx) != bn.num_features:
            continue
        cast(torch.Tensor, bn.running_mean).copy_(src.running_mean[idx])
        cast(torch.Tensor, bn.running_var).copy_(src.running_var[idx])


def _capture(model: nn.Module, module: nn.Module, x: torch.Tensor, want_input: bool) -> torch.Tensor:
    """The input (or output) of ``module`` when ``model`` runs on ``x``; stops after it."""
    got: list[torch.Tensor] = []

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        got.append((inputs[0] if want_input else output).detach())
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not got:
        raise PruningError(f"{type(module).__name__} did not run in a forward pass; it cannot be reconstructed")
    return got[0]


@torch.no_grad()
def _refit(
    name: str,
    layer: _Layer,
    base_layer: nn.Module,
    pruned: nn.Module,
    base: nn.Module,
    batches: list[torch.Tensor],
    kept: Mapping[tuple[str, str], tuple[int, ...]],
    ridge: float,
    positions: int,
    seed: int,
) -> LayerFit:
    """Accumulate the normal equations of one consumer over the batches and solve them."""
    full_out = int(cast(torch.Tensor, base_layer.weight).shape[0])
    out_idx = torch.tensor(kept.get((name, "out"), range(full_out)), dtype=torch.long)
    bias = layer.bias
    has_bias = bias is not None
    gen = torch.Generator().manual_seed(seed)
    xtx = xty = None
    yy = 0.0
    device = layer.weight.device
    for x in batches:
        x = x.to(device)
        inp = _capture(pruned, layer, x, want_input=True)
        out = _capture(base, base_layer, x, want_input=False)
        pos = None
        if isinstance(layer, nn.Conv2d):
            length = out.shape[2] * out.shape[3]
            if length > positions:
                pos = torch.randperm(length, generator=gen)[:positions].to(out.device)
            out = out.flatten(2) if pos is None else out.flatten(2)[:, :, pos]
            target = out[:, out_idx.to(out.device)].transpose(1, 2).reshape(-1, len(out_idx))
        else:
            target = out.reshape(-1, out.shape[-1])[:, out_idx.to(out.device)]
        design = sampled_patches(layer, inp, pos).double()
        if has_bias:
            design = torch.cat([design, design.new_ones(design.shape[0], 1)], 1)
        target = target.double()
        xtx = design.T @ design if xtx is None else xtx + design.T @ design
        xty = design.T @ target if xty is None else xty + design.T @ target
        yy += float((target**2).sum())
    assert xtx is not None and xty is not None
    old = dense_weight(layer).double()
    if bias is not None:
        old = torch.cat([old, bias.detach().double()[:, None]], 1)
    new = ridge_solve(xtx, xty, ridge * float(xtx.diagonal().mean()), has_bias).to(old.device)  # bias unshrunk

    def error(w: torch.Tensor) -> float:
        return float((w @ xtx * w).sum() - 2 * (w * xty.T).sum() + yy) / max(yy, 1e-30)

    before, after = error(old), error(new)
    ok = bool(torch.isfinite(new).all()) and after < before
    if ok:
        weight = new[:, :-1] if has_bias else new
        layer.weight.copy_(weight.reshape(layer.weight.shape).to(layer.weight.dtype))
        if bias is not None:
            bias.copy_(new[:, -1].to(bias.dtype))
    return LayerFit(module=name, error_before=before, error_after=after if ok else before, refit=ok)
