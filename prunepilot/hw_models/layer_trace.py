"""Per-layer shapes of a *built* model, read by forward hooks.

``PruningSpace.layers(widths)`` gives the same :class:`LayerShape` records analytically for a
policy; this module reads them from a real ``nn.Module`` (a pruned model, a model to profile,
a model received by the device server), so predictors and the lookup-table profiler can work
on any module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunepilot.pruning.layers import LayerShape

_F32 = 4


def conv_shape(
    name: str,
    in_channels: int,
    out_channels: int,
    groups: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    bias: bool = False,
) -> LayerShape:
    """A convolution's :class:`LayerShape` for one sample (bytes: fp32 weights + activations)."""
    weight = out_channels * (in_channels // groups) * kernel[0] * kernel[1]
    params = weight + (out_channels if bias else 0)
    macs = out_hw[0] * out_hw[1] * weight
    acts = in_channels * in_hw[0] * in_hw[1] + out_channels * out_hw[0] * out_hw[1]
    kind = "depthwise" if groups > 1 and groups == in_channels else "conv"
    return LayerShape(
        name=name,
        kind=kind,
        in_channels=in_channels,
        out_channels=out_channels,
        groups=groups,
        kernel=kernel,
        stride=stride,
        in_hw=in_hw,
        out_hw=out_hw,
        tokens=out_hw[0] * out_hw[1],
        macs=macs,
        params=params,
        bytes=_F32 * (weight + acts),
    )


def linear_shape(name: str, in_features: int, out_features: int, tokens: int = 1, bias: bool = True) -> LayerShape:
    """A linear layer's :class:`LayerShape` for one sample of ``tokens`` rows."""
    params = in_features * out_features + (out_features if bias else 0)
    return LayerShape(
        name=name,
        kind="linear",
        in_channels=in_features,
        out_channels=out_features,
        groups=1,
        kernel=(1, 1),
        stride=(1, 1),
        in_hw=(1, 1),
        out_hw=(1, 1),
        tokens=tokens,
        macs=tokens * in_features * out_features,
        params=params,
        bytes=_F32 * (in_features * out_features + tokens * (in_features + out_features)),
    )


def _pair(v: int | tuple[int, ...] | str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, str):  # padding="same"/"valid" is not a kernel/stride; callers never pass it
        raise TypeError(v)
    return (int(v[0]), int(v[1]))


def trace_layers(model: nn.Module, input_shape: Sequence[int]) -> list[LayerShape]:
    """Run ``model`` once on zeros of ``input_shape`` and return its compute layers in call order.

    Shapes are per sample (the batch dimension of ``input_shape`` is ignored for MACs/bytes).
    Convolutions (dense, grouped, depthwise), linear layers and ``nn.MultiheadAttention`` are
    recorded; a module called twice is recorded twice.
    """
    records: list[LayerShape] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(mod: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
        name = names.get(mod, type(mod).__name__)
        x = args[0]
        y = out[0] if isinstance(out, tuple) else out
        if isinstance(mod, nn.Conv2d):
            records.append(
                conv_shape(
                    name,
                    mod.in_channels,
                    mod.out_channels,
                    mod.groups,
                    _pair(mod.kernel_size),
                    _pair(mod.stride),
                    (int(x.shape[-2]), int(x.shape[-1])),
                    (int(y.shape[-2]), int(y.shape[-1])),
                    bias=mod.bias is not None,
                )
            )
        elif isinstance(mod, nn.Linear):
            tokens = int(x.numel() // max(1, x.shape[0]) // mod.in_features)
            records.append(linear_shape(name, mod.in_features, mod.out_features, tokens, mod.bias is not None))
        elif isinstance(mod, nn.MultiheadAttention):
            e = mod.embed_dim
            seq_dim = 1 if mod.batch_first else 0
            t = int(x.shape[seq_dim])
            params = sum(p.numel() for p in mod.parameters())
            macs = 4 * t * e * e + 2 * t * t * e
            records.append(
                LayerShape(
                    name=name,
                    kind="attention",
                    in_channels=e,
                    out_channels=e,
                    groups=1,
                    kernel=(1, 1),
                    stride=(1, 1),
                    in_hw=(1, 1),
                    out_hw=(1, 1),
                    tokens=t,
                    macs=macs,
                    params=params,
                    bytes=_F32 * (4 * e * e + 2 * t * e),
                )
            )

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.MultiheadAttention))
    ]
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        with torch.inference_mode():
            model(torch.zeros(*[int(s) for s in input_shape], device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return records
