"""MACs, parameters and per-layer shapes: counted on a model, or computed for a policy.

Convention (the one most pruning papers use): **MACs** are the multiply-accumulates of
convolutions, linear layers and attention (projections plus the two attention matmuls),
for one input sample (projections a composite layer applies functionally, such as Swin's window
attention, count as their linear layers); normalisation, activation and pooling are not counted. **Params**
are all parameters of the model.

:func:`count_macs_params` counts on a real model with forward hooks. :class:`CostModel`
computes the same figures for any group widths *analytically*, from per-module records
built once: each module's input and output sizes are affine in the group widths, so no
pruning is needed. Tests check the two agree on pruned models.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunepilot.pruning.layers import LayerShape
from prunepilot.pruning.patterns import composite_of

_COMPUTE = (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention)

Shape = tuple[int, ...] | None
"""A tensor's shape, or None for anything that is not one tensor."""
IoShapes = dict[str, list[tuple[Shape, Shape]]]
"""``(input shape, output shape)`` of every call of a watched module, by module name, in call order."""


@dataclass(frozen=True)
class Call:
    """Spatial/sequence sizes of one call of a compute module, per sample."""

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    tokens: int
    kv_tokens: int = 0


@dataclass(frozen=True)
class ModuleRecord:
    """How one module's sizes depend on the group widths.

    ``out_terms``/``in_terms`` are ``(group name, channel count, group channels)``: the module
    loses ``count * (1 - width / group channels)`` of its output/input size when the group is
    pruned to ``width``.
    """

    name: str
    kind: str
    in_full: int
    out_full: int
    groups: int = 1
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    calls: tuple[Call, ...] = ()
    params_full: int = 0
    out_terms: tuple[tuple[str, int, int], ...] = ()
    in_terms: tuple[tuple[str, int, int], ...] = ()
    has_bias: bool = False
    mha_extra: tuple[bool, bool] = (False, False)  # (has bias_k/bias_v, has proj biases)

    def size(self, side: str, widths: Mapping[str, int]) -> int:
        """Output (``side="out"``) or input size of this module at ``widths``."""
        terms = self.out_terms if side == "out" else self.in_terms
        full = self.out_full if side == "out" else self.in_full
        if self.kind == "depthwise":
            merged: dict[str, tuple[int, int]] = {}
            for g, n, c in self.out_terms + self.in_terms:
                merged[g] = (max(n, merged.get(g, (0, c))[0]), c)
            terms = tuple((g, n, c) for g, (n, c) in merged.items())
            full = self.out_full
        lost = 0
        for g, n, c in terms:
            w = widths.get(g, c)
            lost += n - (n * w) // c
        return full - lost


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(x) for x in v)
    return (t[0], t[1]) if len(t) >= 2 else (t[0], 1)


def _hw(shape: Sequence[int]) -> tuple[int, int]:
    dims = list(shape[2:])
    if not dims:
        return (1, 1)
    if len(dims) == 1:
        return (int(dims[0]), 1)
    area = 1
    for d in dims[1:]:
        area *= int(d)
    return (int(dims[0]), area)


def trace_calls(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    watch: Collection[str] = (),
    io_shapes: IoShapes | None = None,
) -> dict[str, list[Call]]:
    """Run one forward pass and record the per-sample sizes of every compute-module call.

    Args:
        model: The model (run in eval mode, without gradients; its mode is restored).
        example_inputs: The forward pass's positional inputs.
        watch: Names of further modules (e.g. residual blocks) whose call shapes to record.
        io_shapes: Filled with the ``(input, output)`` shapes of each call of the ``watch``
            modules: the input's shape when the call got exactly one tensor, the output's when it
            returned one tensor, else None.
    """
    first = next((t for t in example_inputs if isinstance(t, torch.Tensor)), None)
    batch = int(first.shape[0]) if first is not None and first.dim() > 0 else 1
    calls: dict[str, list[Call]] = {}
    functional: set[str] = set()  # members of composite layers that use their weights functionally
    hooks = []

    def hook(name: str, module: nn.Module) -> Any:
        def fn(_m: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            x = inputs[0] if inputs else None
            out = output[0] if isinstance(output, tuple) else output
            spec = composite_of(module)
            if spec is not None and spec.passthrough and isinstance(x, torch.Tensor):
                tokens = max(1, x.numel() // max(1, int(x.shape[-1])) // batch)  # channels-last tokens
                for member in dict.fromkeys(f"{name}.{m.path}" for m in spec.members("out")):
                    if member not in calls or member in functional:  # never called as a module
                        functional.add(member)
                        calls.setdefault(member, []).append(Call((1, 1), (1, 1), tokens))
                return
            if isinstance(module, nn.modules.conv._ConvNd) and x is not None:
                call = Call(_hw(x.shape), _hw(out.shape), _hw(out.shape)[0] * _hw(out.shape)[1])
            elif isinstance(module, nn.Linear):
                tokens = max(1, out.numel() // max(1, module.out_features) // batch)
                call = Call((1, 1), (1, 1), tokens)
            elif isinstance(module, nn.MultiheadAttention) and x is not None:
                k = inputs[1] if len(inputs) > 1 else x
                seq_dim = 1 if module.batch_first else 0
                q_len = int(x.shape[seq_dim]) if x.dim() == 3 else int(x.shape[0])
                k_len = int(k.shape[seq_dim]) if k.dim() == 3 else int(k.shape[0])
                call = Call((1, 1), (1, 1), q_len, k_len)
            else:
                return
            calls.setdefault(name, []).append(call)

        return fn

    def shapes(name: str) -> Any:
        def fn(_m: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            one = len(inputs) == 1 and isinstance(inputs[0], torch.Tensor)
            seen = (tuple(inputs[0].shape) if one else None, _shape(output))
            if io_shapes is not None:
                io_shapes.setdefault(name, []).append(seen)

        return fn

    watched = set(watch)
    for name, module in model.named_modules():
        if isinstance(module, _COMPUTE) or composite_of(module) is not None:
            hooks.append(module.register_forward_hook(hook(name, module)))
        if name in watched:
            hooks.append(module.register_forward_hook(shapes(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return calls


def _shape(value: Any) -> Shape:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _kind(module: Any) -> str:
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.groups == module.out_channels and module.out_channels > 1:
            return "depthwise"
        return "convT" if module.transposed else "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.MultiheadAttention):
        return "attention"
    if isinstance(module, nn.Parameter):
        return "param"
    return "scaled"  # norms, PReLU, embeddings: parameters scale with the pruned size


def _own_params(module: Any) -> int:
    if isinstance(module, nn.Parameter):
        return module.numel()
    if isinstance(module, nn.MultiheadAttention):
        return sum(p.numel() for p in module.parameters())
    return sum(p.numel() for p in module.parameters(recurse=False))


def module_record(
    name: str,
    module: Any,
    calls: Sequence[Call] = (),
    out_terms: Sequence[tuple[str, int, int]] = (),
    in_terms: Sequence[tuple[str, int, int]] = (),
    pruned_dim_size: int | None = None,
) -> ModuleRecord:
    """Describe ``module`` (an ``nn.Module`` or an unwrapped ``nn.Parameter``) for costing."""
    kind = _kind(module)
    if kind in ("conv", "convT", "depthwise"):
        return ModuleRecord(
            name,
            kind,
            int(module.in_channels),
            int(module.out_channels),
            int(module.groups),
            _pair(module.kernel_size),
            _pair(module.stride),
            tuple(calls),
            _own_params(module),
            tuple(out_terms),
            tuple(in_terms),
            module.bias is not None,
        )
    if kind == "linear":
        return ModuleRecord(
            name,
            kind,
            int(module.in_features),
            int(module.out_features),
            1,
            (1, 1),
            (1, 1),
            tuple(calls),
            _own_params(module),
            tuple(out_terms),
            tuple(in_terms),
            module.bias is not None,
        )
    if kind == "attention":
        e = int(module.embed_dim)
        return ModuleRecord(
            name,
            kind,
            e,
            e,
            1,
            (1, 1),
            (1, 1),
            tuple(calls),
            _own_params(module),
            tuple(out_terms),
            tuple(in_terms),
            module.in_proj_bias is not None,
            (module.bias_k is not None, module.in_proj_bias is not None),
        )
    size = pruned_dim_size or 1
    return ModuleRecord(name, kind, size, size, params_full=_own_params(module), out_terms=tuple(out_terms))


def layer_at(rec: ModuleRecord, widths: Mapping[str, int]) -> tuple[int, int, LayerShape | None]:
    """``(macs, params, shape)`` of one module at ``widths`` (shape only for compute layers)."""
    out_c = rec.size("out", widths)
    if rec.kind == "scaled" or rec.kind == "param":
        params = rec.params_full * out_c // max(1, rec.out_full) if rec.out_terms else rec.params_full
        return 0, params, None
    in_c = rec.size("in", widths)
    if rec.kind == "depthwise":
        in_c, groups = out_c, out_c
    else:
        groups = rec.groups
    if rec.kind == "attention":
        e = out_c
        params = 4 * e * e + (4 * e if rec.mha_extra[1] else 0) + (2 * e if rec.mha_extra[0] else 0)
        macs = sum(c.tokens * 4 * e * e + 2 * c.tokens * (c.kv_tokens or c.tokens) * e for c in rec.calls)
        weight = 4 * e * e
    else:
        kh, kw = rec.kernel
        weight = out_c * (in_c // max(1, groups)) * kh * kw
        params = weight + (out_c if rec.has_bias else 0)
        macs = sum(c.tokens * weight for c in rec.calls)
    call = rec.calls[0] if rec.calls else Call((1, 1), (1, 1), 1)
    if rec.kind == "linear" or rec.kind == "attention":
        act = call.tokens * (in_c + out_c)
    else:
        act = in_c * call.in_hw[0] * call.in_hw[1] + out_c * call.out_hw[0] * call.out_hw[1]
    shape = LayerShape(
        name=rec.name,
        kind="conv" if rec.kind == "convT" else rec.kind,
        in_channels=in_c,
        out_channels=out_c,
        groups=groups,
        kernel=rec.kernel,
        stride=rec.stride,
        in_hw=call.in_hw,
        out_hw=call.out_hw,
        tokens=call.tokens,
        macs=int(macs),
        params=int(params),
        bytes=4 * int(weight + act),
    )
    return int(macs), int(params), shape


@dataclass(frozen=True)
class CostModel:
    """Analytic MACs, params and layer shapes of one model architecture at any group widths."""

    records: tuple[ModuleRecord, ...]
    fixed_params: int
    _compute: tuple[ModuleRecord, ...] = field(default=(), repr=False)

    @classmethod
    def from_records(cls, records: Sequence[ModuleRecord], total_params: int) -> CostModel:
        """Build from module records; parameters no record covers are counted as fixed."""
        covered = sum(r.params_full for r in records)
        compute = tuple(r for r in records if r.kind not in ("scaled", "param"))
        return cls(tuple(records), total_params - covered, compute)

    def macs(self, widths: Mapping[str, int], skip: Collection[str] = ()) -> int:
        """MACs per sample at ``widths``, without the records named in ``skip``."""
        return sum(layer_at(r, widths)[0] for r in self._compute if r.name not in skip)

    def params(self, widths: Mapping[str, int], skip: Collection[str] = ()) -> int:
        """Parameters at ``widths``, without the records named in ``skip`` (fixed ones all count)."""
        return self.fixed_params + sum(layer_at(r, widths)[1] for r in self.records if r.name not in skip)

    def layers(self, widths: Mapping[str, int], skip: Collection[str] = ()) -> list[LayerShape]:
        """Every compute layer's shape at ``widths``, in model order, without those named in ``skip``."""
        out = []
        for r in self._compute:
            if r.name in skip:
                continue
            shape = layer_at(r, widths)[2]
            if shape is not None:
                out.append(shape)
        return out


def count_macs_params(model: nn.Module, example_inputs: Any) -> tuple[int, int]:
    """Count MACs per sample (forward hooks) and parameters of a real model."""
    inputs = tuple(example_inputs) if isinstance(example_inputs, tuple | list) else (example_inputs,)
    calls = trace_calls(model, inputs)
    skip = {f"{n}.out_proj" for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    macs = 0
    for name, module in model.named_modules():
        if name in calls and name not in skip:
            macs += layer_at(module_record(name, module, calls[name]), {})[0]
    params = sum(p.numel() for p in model.parameters())
    return macs, params
