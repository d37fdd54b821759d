"""The pruning space of a model: its prunable dependency groups and their costs.

A :class:`PruningSpace` is built once per model architecture (one graph trace) and then
answers, for any assignment of widths to groups, the model's MACs, params and per-layer
shapes analytically, without pruning. It also lists the residual blocks that can be removed
whole (:mod:`prunepilot.pruning.depth`); the costs can leave those out. Policies
(:mod:`prunepilot.pruning.policy`) are defined over its groups and blocks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from prunepilot.errors import PolicyError
from prunepilot.pruning import adapter, depth
from prunepilot.pruning.cost import (
    CostModel,
    IoShapes,
    ModuleRecord,
    count_macs_params,
    layer_at,
    module_record,
    trace_calls,
)
from prunepilot.pruning.depth import BlockInfo
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
    """Prunable groups and removable blocks of one model architecture plus an analytic cost model.

    Build with :meth:`build`; do not construct directly. :attr:`signature` hashes the groups
    only, so width policies made before blocks were listed still match.

    Attributes:
        groups: The prunable dependency groups, in model order.
        signature: Hash of the group structure (what a policy must match).
        cost: The analytic cost model.
        base_macs: MACs per sample of the unpruned model (counted).
        base_params: Parameters of the unpruned model (counted).
        ignored: Module names never pruned.
        blocks: The residual blocks that can be replaced by ``nn.Identity()``, in forward order
            (empty for a model without any; see :mod:`prunepilot.pruning.depth`).
    """

    groups: tuple[GroupInfo, ...]
    signature: str
    cost: CostModel
    base_macs: int
    base_params: int
    ignored: tuple[str, ...] = ()
    blocks: tuple[BlockInfo, ...] = ()

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
        io_shapes: IoShapes = {}
        calls = trace_calls(model, inputs, watch=depth.candidate_blocks(model, ignored_layers), io_shapes=io_shapes)
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
        blocks = depth.removable_blocks(model, io_shapes, records)
        macs, params = count_macs_params(model, inputs)
        return cls(groups, _signature(raw), cost, macs, params, tuple(ignored_layers), blocks)

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

    @property
    def block_names(self) -> tuple[str, ...]:
        """Names of the removable blocks, in forward order."""
        return tuple(b.name for b in self.blocks)

    def block(self, name: str) -> BlockInfo:
        """The removable block called ``name``; raises :class:`PolicyError` naming some valid ones."""
        for b in self.blocks:
            if b.name == name:
                return b
        if not self.blocks:
            raise PolicyError(f"unknown block {name!r}: this model has no removable residual blocks")
        more = f" (+{len(self.blocks) - 8} more)" if len(self.blocks) > 8 else ""
        raise PolicyError(
            f"unknown block {name!r}; this model's removable blocks include {list(self.block_names[:8])}{more}"
        )

    def module_group(self) -> dict[str, str]:
        """Map of module name -> group whose channels it carries (output side)."""
        return {m: g.name for g in reversed(self.groups) for m in g.modules}

    # --- analytic costs ------------------------------------------------------------------
    def macs(self, widths: Mapping[str, int], removed_blocks: Sequence[str] = ()) -> int:
        """MACs per sample at ``widths`` (groups not named keep full width) without the
        ``removed_blocks``; no pruning. Raises :class:`PolicyError` for an unknown block."""
        return self.cost.macs(widths, self._removed(removed_blocks)[0])

    def params(self, widths: Mapping[str, int], removed_blocks: Sequence[str] = ()) -> int:
        """Parameters at ``widths`` without the ``removed_blocks``; no pruning."""
        skip, fixed = self._removed(removed_blocks)
        return self.cost.params(widths, skip) - fixed

    def layers(self, widths: Mapping[str, int], removed_blocks: Sequence[str] = ()) -> list[LayerShape]:
        """Per-layer shapes at ``widths`` without the ``removed_blocks``, for hardware models; no pruning."""
        return self.cost.layers(widths, self._removed(removed_blocks)[0])

    def _removed(self, removed_blocks: Sequence[str]) -> tuple[frozenset[str], int]:
        """Cost records inside ``removed_blocks``, and the blocks' parameters no record covers."""
        if not removed_blocks:
            return frozenset(), 0
        blocks = [self.block(n) for n in dict.fromkeys(removed_blocks)]
        skip = frozenset(r.name for r in self.cost.records if any(depth.inside(r.name, b.name) for b in blocks))
        covered = sum(r.params_full for r in self.cost.records if r.name in skip)
        return skip, sum(b.params for b in blocks) - covered

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
