"""Per-layer shapes of a model at given group widths: what hardware models predict from.

A :class:`LayerShape` describes one compute layer (convolution, linear or attention) of a
model *as it would be after pruning*, so latency predictors can work from a policy alone,
without building the pruned model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerShape:
    """One compute layer of a (possibly pruned) model, for one input sample.

    Attributes:
        name: Module name in the model (``layer1.0.conv1``).
        kind: ``"conv"`` (dense or grouped convolution), ``"depthwise"`` (groups equal to the
            channel count), ``"linear"``, or ``"attention"`` (``nn.MultiheadAttention``).
        in_channels: Input channels (or features, or embedding dim) at these widths.
        out_channels: Output channels (or features, or embedding dim) at these widths.
        groups: Convolution groups at these widths (1 for linear/attention).
        kernel: Kernel size ``(kh, kw)``; ``(1, 1)`` for linear/attention.
        stride: Stride ``(sh, sw)``; ``(1, 1)`` for linear/attention.
        in_hw: Input spatial size ``(h, w)``; ``(1, 1)`` for linear/attention.
        out_hw: Output spatial size ``(h, w)``; ``(1, 1)`` for linear/attention.
        tokens: Rows a linear/attention layer processes per sample (sequence length,
            or 1); ``out_hw[0] * out_hw[1]`` for convolutions.
        macs: Multiply-accumulates for one sample.
        params: Parameters of the layer (weights and bias).
        bytes: fp32 bytes moved for one sample: weights + input + output activations.
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    groups: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    tokens: int
    macs: int
    params: int
    bytes: int
