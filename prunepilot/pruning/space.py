"""The pruning space of a model: its prunable dependency groups and their costs.

A :class:`PruningSpace` is built once per model architecture (one graph trace) and then
answers, for any assignment of widths to groups, the model's MACs, params and per-layer
shapes analytically, without pruning. Policies (:mod:`prunepilot.pruning.policy`) are
defined over its groups.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from prunepilot.errors import PolicyError
from prunepilot.pruning import adapter
from prunepilot.pruning.cost import (
    CostModel,
    ModuleRecord,
    count_macs_params,
    layer_at,
    module_record,
    trace_calls,
)
from prunepilot.pruning.guard import Limits
from prunepilot.pruning.layers import LayerShape


@dataclass(frozen=True)
class GroupInfo:
    """One prunable dependency group: layers that must keep one channel count.

    Attributes:
        name: Stable name: the first output-pruned conv/linear of the group in model order.
        index: Position of the group in :attr:`PruningSpace.groups` (model order).
        channels: Full channel count of the group.
        multiple: Widths must be a multiple of this (grouped-conv groups, attention heads).
        modules: Names of all modules whose channels move with the group.
        kind: Kind of the root layer: ``conv``, ``depthwise``, ``linear`` or ``attention``.
        kernel: Root layer kernel size (first dimension).
        stride: Root layer stride (first dimension).
        in_channels: Root layer input channels at full width.
        fmap: Root layer output feature-map height (1 for linear layers).
        macs: MACs per sample of all compute layers the group touches, at full width.
        params: Parameters of all layers the group touches, at full width.
    """

    name: str
    index: int
    channels: int
    multiple: int
    modules: tuple[str, ...]
    kind: str
    kernel: int
    stride: int
    in_channels: int
    fmap: int
    macs: int
    params: int


@dataclass(frozen=True)
class PruningSpace:
    """Prunable groups of one model architecture plus an analytic cost model.

    Build with :meth:`build`; do not construct directly.
    """

    groups: tuple[GroupInfo, ...]
    signature: str
    cost: CostModel
    base_macs: int
    base_params: int
    ignored: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        model: nn.Module,
        example_inputs: Any,
        ignored_layers: Sequence[str] = (),
        limits: Limits | None = None,
    ) -> PruningSpace:
        """Analyse ``model`` once: dependency groups, names, and per-module cost records.

        Args:
            model: The model (not modified).
            example_inputs: A batch (or tuple of inputs) for tracing, e.g. ``torch.randn(1, 3, 32, 32)``.
            ignored_layers: Module names never to prune (output layers are always excluded).
            limits: Time and memory limits of the graph analysis.

        Raises:
            GraphAnalysisError: the model cannot be analysed within the limits.
            PolicyError: an ``ignored_layers`` entry is not a module of the model.
        """
        modules = dict(model.named_modules())
        missing = [n for n in ignored_layers if n not in modules]
        if missing:
            raise PolicyError(
                f"ignored_layers {missing} are not modules of this model; e.g. {sorted(n for n in modules if n)[:8]}"
            )
        inputs = adapter.example_tuple(example_inputs)
        graph, raw = adapter.analyse(
            model, inputs, [modules[n] for n in ignored_layers], what=type(model).__name__, limits=limits
        )
        adapter.release(graph)  # only the groups are kept: the graph's cycles would hold the trace
        calls = trace_calls(model, inputs)
        objects: dict[str, Any] = dict(modules)
        objects.update(dict(model.named_parameters()))

        out_terms: dict[str, list[tuple[str, int, int]]] = {}
        in_terms: dict[str, list[tuple[str, int, int]]] = {}
        full_size: dict[str, int] = {}
        for g, _root in raw:
            for dep in g.deps:
                bucket = out_terms if dep.side == "out" else in_terms
                bucket.setdefault(dep.module, []).append((g.name, dep.count, g.channels))
                if dep.side == "out":
                    full_size[dep.module] = dep.full
        skip = {f"{n}.out_proj" for n, m in modules.items() if isinstance(m, nn.MultiheadAttention)}
        names = [n for n in calls if n not in skip]
        names += [n for n in out_terms if n not in calls and n not in skip and n in objects]
        records = {
            n: module_record(
                n, objects[n], calls.get(n, ()), out_terms.get(n, ()), in_terms.get(n, ()), full_size.get(n)
            )
            for n in names
        }
        total = sum(p.numel() for p in model.parameters())
        cost = CostModel.from_records(list(records.values()), total)
        groups = tuple(_group_info(i, g, records) for i, (g, _) in enumerate(raw))
        macs, params = count_macs_params(model, inputs)
        return cls(groups, _signature(raw), cost, macs, params, tuple(ignored_layers))

    # --- lookups -------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """Group names in model order."""
        return tuple(g.name for g in self.groups)

    def group(self, name: str) -> GroupInfo:
        """The group called ``name``; raises :class:`PolicyError` listing valid names."""
        for g in self.groups:
            if g.name == name:
                return g
        raise PolicyError(f"unknown group {name!r}; this model's groups are {list(self.names)}")

    def full_widths(self) -> dict[str, int]:
        """Every group at full width."""
        return {g.name: g.channels for g in self.groups}

    def module_group(self) -> dict[str, str]:
        """Map of module name -> group whose channels it carries (output side)."""
        return {m: g.name for g in reversed(self.groups) for m in g.modules}

    # --- analytic costs ------------------------------------------------------------------
    def macs(self, widths: Mapping[str, int]) -> int:
        """MACs per sample at ``widths`` (groups not named keep full width); no pruning."""
        return self.cost.macs(widths)

    def params(self, widths: Mapping[str, int]) -> int:
        """Parameters at ``widths``; no pruning."""
        return self.cost.params(widths)

    def layers(self, widths: Mapping[str, int]) -> list[LayerShape]:
        """Per-layer shapes at ``widths``, for hardware models; no pruning."""
        return self.cost.layers(widths)

    def describe(self) -> list[dict[str, Any]]:
        """Plain-data description of the groups (for reports and ``prunepilot groups``)."""
        return [
            {
                "name": g.name,
                "channels": g.channels,
                "multiple": g.multiple,
                "kind": g.kind,
                "modules": len(g.modules),
                "macs": g.macs,
            }
            for g in self.groups
        ]


def _signature(raw: Sequence[tuple[adapter.RawGroup, nn.Module]]) -> str:
    data = [[g.name, g.channels, g.blocks, sorted(d.module for d in g.deps)] for g, _ in raw]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]


def _group_info(index: int, g: adapter.RawGroup, records: Mapping[str, ModuleRecord]) -> GroupInfo:
    touched = sorted({d.module for d in g.deps})
    root = records.get(g.name)
    macs = params = 0
    for name in touched:
        rec = records.get(name)
        if rec is None:
            continue
        m, p, _ = layer_at(rec, {})
        macs += m
        params += p
    call = root.calls[0] if root and root.calls else None
    return GroupInfo(
        name=g.name,
        index=index,
        channels=g.channels,
        multiple=g.blocks,
        modules=tuple(touched),
        kind=("conv" if root.kind == "convT" else root.kind) if root else "conv",
        kernel=root.kernel[0] if root else 1,
        stride=root.stride[0] if root else 1,
        in_channels=root.in_full if root else g.channels,
        fmap=call.out_hw[0] if call else 1,
        macs=macs,
        params=params,
    )
