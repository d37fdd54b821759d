"""Layers that read a group's channels (its *consumers*) as linear maps of their sampled inputs.

A Conv2d (zero padding) or Linear consumer computes ``patches @ W^T``: im2col patches of its input
at sampled output positions, times its weight flattened over all inputs. ThiNet
(:mod:`prunepilot.pruning.criteria`) scores channels by their contributions to that product, and
reconstruction (:mod:`prunepilot.pruning.reconstruct`) refits ``W`` by least squares on it.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

MAX_FEATURES = 4608
"""Largest consumer input read (channels x kernel elements, e.g. 512 x 3 x 3): the statistics are
``(features x features)`` matrices."""


def conv_padding(module: nn.Conv2d) -> tuple[int, int] | None:
    """A Conv2d's zero padding as two ints (``"same"`` with odd effective kernels too), else None."""
    if module.padding_mode != "zeros":
        return None
    if module.padding == "valid":
        return (0, 0)
    if module.padding == "same":
        spans = [module.dilation[i] * (module.kernel_size[i] - 1) for i in range(2)]
        return (spans[0] // 2, spans[1] // 2) if all(s % 2 == 0 for s in spans) else None
    return cast(tuple[int, int], tuple(int(p) for p in module.padding))


def linear_features(module: nn.Module) -> int | None:
    """Inputs x kernel elements of a consumer read as a linear map (a Conv2d with zero padding, a
    Linear), or None: another layer type, or more than :data:`MAX_FEATURES`."""
    if isinstance(module, nn.Conv2d) and not module.transposed:
        if conv_padding(module) is None:
            return None
        feats = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
    elif isinstance(module, nn.Linear):
        feats = module.in_features
    else:
        return None
    return feats if feats <= MAX_FEATURES else None


def sampled_patches(module: nn.Module, x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """A consumer's input at sampled output positions: ``(samples, features)`` (im2col for Conv2d)."""
    if isinstance(module, nn.Conv2d):
        padding = conv_padding(module)
        if padding is None:
            raise ValueError(
                f"{module}: padding {module.padding!r} ({module.padding_mode}) cannot be read as patches; "
                "supported: zero padding given as ints, 'valid', or 'same' with odd kernels"
            )
        cols = F.unfold(x, module.kernel_size, module.dilation, padding, module.stride)  # (N, C*kk, L)
        if positions is not None:
            cols = cols[:, :, positions]
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The weight as ``(out, features)`` over *all* inputs (block-diagonal zeros for grouped convs)."""
    w = cast(torch.Tensor, module.weight).detach()
    if isinstance(module, nn.Conv2d) and module.groups > 1:
        g, out, per = module.groups, w.shape[0], w.shape[1]
        dense = w.new_zeros(out, module.in_channels, *w.shape[2:])
        for i in range(g):
            dense[i * out // g : (i + 1) * out // g, i * per : (i + 1) * per] = w[i * out // g : (i + 1) * out // g]
        w = dense
    return w.reshape(w.shape[0], -1)


def output_positions(module: nn.Conv2d, x: torch.Tensor) -> int:
    """Output positions (height x width) of a Conv2d on input ``x``."""
    padding, sizes = conv_padding(module) or (0, 0), []
    for i in range(2):
        span = module.dilation[i] * (module.kernel_size[i] - 1) + 1
        sizes.append((x.shape[2 + i] + 2 * padding[i] - span) // module.stride[i] + 1)
    return sizes[0] * sizes[1]


def ridge_solve(xtx: torch.Tensor, xty: torch.Tensor, shrink: float, bias: bool) -> torch.Tensor:
    """The weights ``W`` (outputs x inputs) of the ridge least-squares fit from accumulated normal
    equations: solve ``(X^T X + shrink * I) W^T = X^T Y``, the bias column (last, when ``bias``)
    unshrunk. ``shrink`` is absolute; callers scale it to their features. Solved on the CPU."""
    reg = torch.eye(xtx.shape[0], dtype=xtx.dtype, device=xtx.device) * shrink
    if bias:
        reg[-1, -1] = 0.0
    return torch.linalg.lstsq((xtx + reg).cpu(), xty.cpu()).solution.T.to(xtx.device)
