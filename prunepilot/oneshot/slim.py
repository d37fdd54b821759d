"""Slimmable layers: convolution, linear and batch-norm modules that run on their leading channels.

A supernet replaces every ``Conv*d``, ``Linear`` and ``BatchNorm*d`` of its private copy of
the model with one of these. Each keeps the original parameters and buffers under the
original names (so state dicts are unchanged) and, in ``forward``:

* takes as many **input** channels as the incoming tensor has (``x.shape[1]``, or the last
  dimension for linear layers), i.e. the leading input channels;
* produces the **output** width its dependency group has in the shared :class:`WidthState`
  (full width for layers whose output channels are in no group, e.g. the classifier).

With the channels of every group ordered by importance once (see
:class:`~prunepilot.oneshot.supernet.Supernet`), "leading channels" are the most important
ones. :class:`WidthState` also carries optional weight overrides (MetaPruning's generated
weights) and an optional MACs trace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_CONV_FN: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class WidthState:
    """State shared by all slim layers of one supernet (a plain object, never in state dicts).

    Attributes:
        widths: Current width per group name; groups missing from it run at full width.
        weights: Weight overrides by layer name (full-size tensors, sliced like the weights).
        trace: When a list, every conv/linear call appends ``(layer name, MACs per sample)``.
    """

    def __init__(self) -> None:
        self.widths: dict[str, int] = {}
        self.weights: dict[str, torch.Tensor] = {}
        self.trace: list[tuple[str, int]] | None = None

    def width(self, group: str | None, full: int) -> int:
        """Width of ``group`` now (``full`` for layers in no group)."""
        return full if group is None else int(self.widths.get(group, full))


class SlimConv(nn.Module):
    """A ``Conv1d/2d/3d`` (dense or depthwise) running on leading channels."""

    def __init__(self, conv: nn.modules.conv._ConvNd, name: str, out_group: str | None, state: WidthState) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.depthwise = conv.groups > 1
        self.fn = _CONV_FN[len(conv.kernel_size)]
        self.name, self.out_group, self.state = name, out_group, state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.state.weights.get(self.name, self.weight)
        out = self.state.width(self.out_group, weight.shape[0])
        cin = int(x.shape[1])
        if self.depthwise:  # one filter per channel: input and output are the same group
            if cin != out:
                raise RuntimeError(f"depthwise layer {self.name!r} got {cin} channels for width {out}")
            w, groups = weight[:out], out
        else:
            w, groups = weight[:out, :cin], 1
        bias = self.bias[:out] if self.bias is not None else None
        y = self.fn(x, w, bias, self.stride, self.padding, self.dilation, groups)
        if self.state.trace is not None:
            per_out = y[0].numel()  # out channels x output positions, one sample
            self.state.trace.append((self.name, per_out * (w.shape[1]) * int(w[0, 0].numel())))
        return y

    def extra_repr(self) -> str:
        return f"{self.name}, out_group={self.out_group}, weight={tuple(self.weight.shape)}"


class SlimLinear(nn.Module):
    """An ``nn.Linear`` running on leading input features and its group's output width."""

    def __init__(self, linear: nn.Linear, name: str, out_group: str | None, state: WidthState) -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.name, self.out_group, self.state = name, out_group, state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.state.weights.get(self.name, self.weight)
        out = self.state.width(self.out_group, weight.shape[0])
        w = weight[:out, : x.shape[-1]]
        y = F.linear(x, w, self.bias[:out] if self.bias is not None else None)
        if self.state.trace is not None:
            tokens = max(1, y.numel() // max(1, out) // max(1, int(x.shape[0]) if x.dim() > 1 else 1))
            self.state.trace.append((self.name, tokens * int(w.shape[0]) * int(w.shape[1])))
        return y

    def extra_repr(self) -> str:
        return f"{self.name}, out_group={self.out_group}, weight={tuple(self.weight.shape)}"


class SlimBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A ``BatchNorm*d`` over the leading channels of its input.

    It is a ``_BatchNorm`` (so :func:`~prunepilot.pruning.recalibrate_bn` finds it) and
    repeats ``_BatchNorm.forward`` on sliced parameters and statistics; running statistics
    of the leading channels are updated in place (slices are views).
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, name: str, state: WidthState) -> None:
        super().__init__(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        self.weight, self.bias = bn.weight, bn.bias
        if bn.track_running_stats:
            self.running_mean, self.running_var = bn.running_mean, bn.running_var
            self.num_batches_tracked = bn.num_batches_tracked
        self.name, self.state = name, state

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 - torch's signature
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input to {self.name!r}, got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = int(x.shape[1])
        factor = 0.0 if self.momentum is None else float(self.momentum)
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else float(self.momentum)
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        mean = self.running_mean[:c] if self.running_mean is not None and keep_stats else None
        var = self.running_var[:c] if self.running_var is not None and keep_stats else None
        weight = self.weight[:c] if self.weight is not None else None
        bias = self.bias[:c] if self.bias is not None else None
        return F.batch_norm(x, mean, var, weight, bias, use_batch, factor, self.eps)


def slim_layer(module: nn.Module, name: str, out_group: str | None, state: WidthState) -> nn.Module | None:
    """The slim replacement of ``module``, or None if it is not a conv/linear/batch-norm layer."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return SlimConv(module, name, out_group, state)
    if isinstance(module, nn.Linear):
        return SlimLinear(module, name, out_group, state)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return SlimBatchNorm(module, name, state)
    return None


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted path) of ``root``."""
    parent_name, _, leaf = name.rpartition(".")
    parent: Any = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, module)
