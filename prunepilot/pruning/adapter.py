"""The one adapter around Torch-Pruning. No other prunepilot module imports ``torch_pruning``.

Torch-Pruning (Fang et al., DepGraph, CVPR 2023) finds the coupled layers of any model and
removes channels from all of them at once. It also has sharp edges that fail silently; this
module covers each of them:

* **Ratios at or above 1 - 1/C prune nothing** (``MetaPruner`` refuses to empty a layer):
  we never pass ratios. Widths are integers computed by the policy, clamped to at least one
  channel block, and the channels to remove are chosen here.
* **Coupled layers given different ratios silently get one ratio**: policies are defined
  over dependency *groups*, never single layers, and
  :meth:`~prunepilot.pruning.policy.PruningPolicy.from_layer_ratios` rejects disagreeing
  ratios inside a group.
* **Frozen parameters are skipped**: ``requires_grad`` is switched on for the duration of
  tracing and restored per parameter afterwards.
* **Shared mutable default arguments leak modules between calls**: every call passes fresh
  dicts and lists (``ignored_layers``, ``unwrapped_parameters``, ``target_types``).
* **Tracing needs autograd and leaves the model in eval mode**: tracing runs under
  ``torch.enable_grad()`` and the train/eval mode of every submodule is restored.
* **Hessian importance accumulates only the last sample** (its ``accumulate_grad`` keys by
  name but stores by parameter): we accumulate squared per-sample gradients ourselves.
* **Patterns its tracing misreads** (:mod:`prunepilot.pruning.patterns`: channel shuffles,
  Swin's window attention and patch merging) go through its customized pruners.
* **Analysis can run for minutes or past 10 GB**: it runs under one time/memory bound
  (:func:`analyse`, 30 s / 4 GiB by default); failures name the module or operation.
* Finally, every group's width after pruning is **asserted** against the policy.

Criteria beyond Torch-Pruning's own (:mod:`~prunepilot.pruning.criteria`) get each group as
plain data (:func:`_view`). What needs no Torch-Pruning lives in the sibling modules (selection,
groups, fixups, patterns, gradients, tracing); some of their names are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from prunepilot.errors import GraphAnalysisError, PruningError
from prunepilot.pruning import criteria, patterns
from prunepilot.pruning.fixups import FIXUPS as FIXUPS
from prunepilot.pruning.fixups import register_fixup as register_fixup
from prunepilot.pruning.fixups import run_fixups
from prunepilot.pruning.gradients import prepare_data_dependent
from prunepilot.pruning.groups import DepRecord, KeptIndices, RawGroup, channel_blocks, check_widths, output_layers
from prunepilot.pruning.guard import Limits, bounded, locate_in
from prunepilot.pruning.patterns import register_composite as register_composite
from prunepilot.pruning.selection import DATA_DEPENDENT, canonical_importance, needs_data_message, select_keep
from prunepilot.pruning.selection import IMPORTANCE_CRITERIA as IMPORTANCE_CRITERIA
from prunepilot.pruning.tracing import example_tuple as example_tuple
from prunepilot.pruning.tracing import module_names, tracing_state

TORCH_PRUNING_VERSION: str = str(getattr(tp, "__version__", "unknown"))

_ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


class _RegroupPruner(tp.pruner.BasePruningFunc):  # type: ignore[misc]
    """Passes no pruning on (distinct in/out functions); groups that reach it are never pruned."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        raise PruningError(f"{layer!r} cannot be pruned: groups that reach a channel regrouping are kept whole")

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return self.prune_out_channels(layer, idxs)

    def get_out_channels(self, layer: patterns.RegroupOp) -> int:
        return layer.channels

    get_in_channels = get_out_channels


class _CompositePruner(tp.pruner.BasePruningFunc):  # type: ignore[misc]
    """Prunes a composite layer member by member with Torch-Pruning's standard pruners."""

    def __init__(self, spec: patterns.CompositeLayer) -> None:
        super().__init__()
        self.spec = spec
        if spec.passthrough:  # one channel set: Torch-Pruning's intra-layer dependency
            self.prune_in_channels = self.prune_out_channels  # type: ignore[method-assign]

    def _prune(self, layer: nn.Module, side: patterns.Side, idxs: Sequence[int]) -> nn.Module:
        for _path, sub, sub_side, sub_idxs in list(self.spec.expand(layer, side, idxs)):
            pruner = tp.pruner.function.PrunerBox[tp.ops.module2type(sub)]
            pruner.pruning_dim = -1 if isinstance(sub, nn.LayerNorm) else 1
            (pruner.prune_out_channels if sub_side == "out" else pruner.prune_in_channels)(sub, sub_idxs)
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return self._prune(layer, "out", idxs)

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return self._prune(layer, "in", idxs)

    def get_out_channels(self, layer: nn.Module) -> int:
        return self.spec.out_channels(layer)

    def get_in_channels(self, layer: nn.Module) -> int:
        return self.spec.in_channels(layer)


class _Graph(tp.DependencyGraph):  # type: ignore[misc]
    """Torch-Pruning's graph with the pattern rules applied between tracing and linking nodes
    (``build_dependency`` calls ``_trace``, then ``_build_dependency``: the one seam, in 1.5-1.6)."""

    def __init__(self, entries: dict[nn.Module, list[Any]]) -> None:
        super().__init__()
        self.entries = entries  # composite layer -> grad_fns of its inputs, recorded while tracing

    def _build_dependency(self, module2node: dict[Any, Any]) -> Any:
        for module, node in list(module2node.items()):
            if module in self.entries:
                patterns.cut_inside(module2node, node, self.entries[module])
        for module, node in list(module2node.items()):
            channels = patterns.regroup_channels(node.grad_fn) if node.type == tp.ops.OPTYPE.RESHAPE else None
            if channels:
                op = patterns.RegroupOp(channels, node.grad_fn.name())
                del module2node[module]
                module2node[op] = node
                node.module, node.module_class, node.type = op, patterns.RegroupOp, tp.ops.OPTYPE.CUSTOMIZED
        return super()._build_dependency(module2node)


def _trace(model: nn.Module, example_inputs: Any) -> Any:
    """Build the dependency graph with the pattern rules (callers bound it and name its errors)."""
    composites = {m: spec for m in model.modules() if (spec := patterns.composite_of(m)) is not None}
    entries: dict[nn.Module, list[Any]] = {}

    def record(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        entries[module] = [t.grad_fn for t in inputs if isinstance(t, torch.Tensor) and t.grad_fn is not None]

    pruners: dict[Any, Any] = {type(m): _CompositePruner(spec) for m, spec in composites.items()}
    pruners[patterns.RegroupOp] = _RegroupPruner()
    hooks = [m.register_forward_pre_hook(record) for m in composites]
    try:
        return _Graph(entries).build_dependency(
            model,
            example_inputs=example_tuple(example_inputs),
            unwrapped_parameters=None,
            customized_pruners=pruners,
            ignored_layers=[],
            ignored_params=[],
            verbose=False,
        )
    finally:
        for h in hooks:
            h.remove()


def analyse(
    model: nn.Module,
    example_inputs: Any,
    ignored: Sequence[nn.Module] = (),
    *,
    what: str = "model",
    limits: Limits | None = None,
) -> tuple[Any, list[tuple[RawGroup, nn.Module]]]:
    """Trace ``model`` into a Torch-Pruning DependencyGraph and list its prunable groups
    (:func:`list_groups`) under **one** time and memory bound (:class:`Limits`).

    Raises:
        GraphAnalysisError: tracing or grouping failed or exceeded the limits; the message names
            the module or operation Torch-Pruning was working on.
    """
    names = module_names(model)
    with tracing_state(model), bounded(f"graph analysis of {what}", limits, locate=lambda tb: locate_in(tb, names)):
        try:
            graph = _trace(model, example_inputs)
            return graph, list_groups(model, graph, ignored)
        except (GraphAnalysisError, KeyboardInterrupt):
            raise
        except Exception as exc:  # Torch-Pruning raises bare errors (ZeroDivisionError, ...)
            at = f" at {where}" if (where := locate_in(exc.__traceback__, names)) else ""
            raise GraphAnalysisError(
                f"Torch-Pruning could not analyse {what}{at}: {type(exc).__name__}: {exc}. List the module in "
                "ignored_layers, or describe it with prunepilot.pruning.adapter.register_composite(class_name, layer)"
            ) from exc


def _records(
    graph: Any, names: Mapping[Any, str], dep: Any, idxs: Sequence[int]
) -> Iterator[tuple[str, str, list[int], int]]:
    """``(name, side, indices, full size)`` of each named layer one dependency prunes;
    a composite layer by its members (``features.1.0.attn.qkv``), Torch-Pruning's op nodes not at all."""
    target = dep.target.module
    if target not in names:
        return
    side: patterns.Side = "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"
    pruner = graph.get_pruner_of_module(target)
    if isinstance(pruner, _CompositePruner):
        for path, sub, sub_side, sub_idxs in pruner.spec.expand(target, side, idxs):
            yield f"{names[target]}.{path}", sub_side, sub_idxs, patterns.member_size(sub, sub_side)
        return
    yield names[target], side, [int(i) for i in idxs], _size_of(graph, dep.target, side, len(idxs))


def list_groups(model: nn.Module, graph: Any, ignored: Sequence[nn.Module] = ()) -> list[tuple[RawGroup, nn.Module]]:
    """All prunable dependency groups, in model order, with their root module.

    A group is named by its first output-pruned conv/linear in ``model.named_modules()``
    order, which is stable across processes and checkpoints of the same architecture. Groups
    whose channels reach a channel regrouping (a shuffle) are kept whole: they are not listed.
    """
    names = module_names(model)
    order = {m: i for i, (_, m) in enumerate(model.named_modules())}
    skip = list(ignored) + output_layers(graph)
    composite_roots = [
        t for t, p in graph.CUSTOMIZED_PRUNERS.items() if isinstance(p, _CompositePruner) and p.spec.root
    ]
    found: list[tuple[RawGroup, nn.Module]] = []
    with tracing_state(model):
        groups = list(
            graph.get_all_groups(ignored_layers=list(skip), root_module_types=[*_ROOT_TYPES, *composite_roots])
        )
    for group in groups:
        if any(isinstance(dep.target.module, patterns.RegroupOp) for dep, _ in group):
            continue
        deps: dict[tuple[str, str], tuple[int, int]] = {}
        roots: list[Any] = []
        blocks = 1
        for dep, idxs in group:
            for layer, side, sub_idxs, full in _records(graph, names, dep, idxs):
                deps[(layer, side)] = (max(deps.get((layer, side), (0, 0))[0], len(sub_idxs)), full)
            target = dep.target.module
            if isinstance(target, nn.Module):
                blocks = math.lcm(blocks, channel_blocks(target))
            if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(target, (*_ROOT_TYPES, *composite_roots)):
                roots.append(target)
        if not roots:
            continue
        root = min(roots, key=lambda m: order.get(m, 1 << 30))
        channels = int(graph.get_out_channels(root))
        if channels % blocks:
            blocks = 1
        records = tuple(DepRecord(m, s, c, f) for (m, s), (c, f) in sorted(deps.items()))
        spec = getattr(graph.get_pruner_of_module(root), "spec", None)  # a composite root: named by its member
        name = f"{names[root]}.{spec.root}" if spec else names[root]
        found.append((RawGroup(name, channels, blocks, records), root))
    found.sort(key=lambda item: order.get(item[1], 1 << 30))
    return found


def _size_of(graph: Any, node: Any, side: str, default: int) -> int:
    """A node's full size on one side; Torch-Pruning crashes on modules without a pruner."""
    try:
        size = graph.get_out_channels(node) if side == "out" else graph.get_in_channels(node)
    except AttributeError:
        size = None
    return int(size) if size is not None else default


def _make_importance(name: str) -> Any:
    types = [nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm]
    if name in ("l1", "l2"):
        return tp.importance.MagnitudeImportance(p=int(name[1]), target_types=list(types))
    if name == "bn-scale":
        return tp.importance.BNScaleImportance()
    made = {"taylor": tp.importance.TaylorImportance, "hessian": tp.importance.HessianImportance}.get(name)
    return made(target_types=list(types)) if made else tp.importance.RandomImportance()


def prune_to_widths(
    model: nn.Module,
    example_inputs: Any,
    widths: Mapping[str, int],
    *,
    importance: str = "l1",
    calib_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ignored: Sequence[str] = (),
    limits: Limits | None = None,
    kept: KeptIndices | None = None,
) -> nn.Module:
    """Prune ``model`` **in place** so that each named group keeps exactly ``widths[name]``.

    Args:
        model: The model to modify (callers pass a copy).
        example_inputs: Inputs for tracing.
        widths: Target channel count per group name; groups not named keep full width.
        importance: Channel-selection criterion (see :data:`IMPORTANCE_CRITERIA`).
        calib_batches: ``(inputs, targets)`` batches for the data-dependent criteria.
        ignored: Module names never to prune.
        limits: Time/memory limits for graph analysis.
        kept: If given, filled with the indices each pruned module kept, per ``(name, side)``.

    Raises:
        PruningError: a width cannot be honoured or the result differs from what was asked.
    """
    crit = canonical_importance(importance)
    by_name = dict(model.named_modules())
    ignored_modules = [by_name[n] for n in ignored if n in by_name]
    graph, groups = analyse(model, example_inputs, ignored_modules, limits=limits)
    try:
        _prune_groups(model, graph, groups, example_inputs, widths, crit, calib_batches, kept)
    finally:
        release(graph)
    run_fixups(model, example_tuple(example_inputs))
    return model


def release(graph: Any) -> None:
    """Break the reference cycles of a Torch-Pruning graph so that it is freed at once.

    The graph's nodes point at each other and at the traced model's modules and autograd nodes,
    so a dropped graph waits for Python's cyclic collector and keeps a whole model copy (and its
    traced activations) alive until then: pruning a 600M-parameter model twice held three
    copies. Clearing the links lets reference counting free it when the caller lets go.
    """
    for node in list(getattr(graph, "module2node", {}).values()):
        node.inputs.clear()
        node.outputs.clear()
        node.dependencies.clear()
        node.grad_fn = None
    for table in ("module2node", "_module2name", "_param_to_name"):
        if isinstance(getattr(graph, table, None), dict):
            getattr(graph, table).clear()


def _prune_groups(
    model: nn.Module,
    graph: Any,
    groups: Sequence[tuple[RawGroup, nn.Module]],
    example_inputs: Any,
    widths: Mapping[str, int],
    crit: str,
    calib_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
    kept: KeptIndices | None,
) -> None:
    """Score, then prune ``groups`` of ``model`` on ``graph`` to ``widths`` (checked after)."""
    check_widths([raw for raw, _ in groups], widths)
    to_prune = [(raw, root) for raw, root in groups if int(widths.get(raw.name, raw.channels)) < raw.channels]
    # Score every group on the unpruned model first; indices of one group do not move when
    # another group is pruned, so the plan stays valid while it is carried out.
    scores = _score_groups(model, graph, to_prune, crit, calib_batches, example_inputs, widths)
    names, sink = module_names(model), kept if kept is not None else {}
    with tracing_state(model):
        for raw, root in to_prune:
            keep = select_keep(scores[raw.name], int(widths[raw.name]), raw.blocks)
            drop = sorted(set(range(raw.channels)) - set(keep))
            group = graph.get_pruning_group(root, _out_fn(graph, root), drop)
            for dep, idxs in group:
                for layer, side, sub_idxs, full in _records(graph, names, dep, idxs):
                    sink[(layer, side)] = tuple(sorted(set(sink.get((layer, side), range(full))) - set(sub_idxs)))
            group.prune()
        model.zero_grad(set_to_none=True)
    for raw, root in groups:
        want = int(widths.get(raw.name, raw.channels))
        got = int(graph.get_out_channels(root))
        if got != want:
            raise PruningError(
                f"Torch-Pruning left group {raw.name!r} with {got} channels; the policy asked for {want}"
            )


def _score_groups(
    model: nn.Module,
    graph: Any,
    groups: Sequence[tuple[RawGroup, nn.Module]],
    crit: str,
    calib_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
    example_inputs: Any,
    widths: Mapping[str, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-channel importance of each full-width group (higher keeps), on the current model."""
    if crit in criteria.CRITERIA:
        batches = list(calib_batches or [])
        if crit in DATA_DEPENDENT and groups and not batches:
            raise PruningError(needs_data_message(crit))
        views = [_view(graph, raw, root) for raw, root in groups]
        with tracing_state(model):
            example = example_tuple(example_inputs)
            kw: dict[str, Any] = {"batches": batches, "example_inputs": example, "widths": widths, "keep": select_keep}
            got = criteria.channel_scores(crit, model, views, **kw)
            model.zero_grad(set_to_none=True)
        return {name: s.detach().float().cpu().clone() for name, s in got.items()}
    imp = _make_importance(crit)
    found: dict[str, torch.Tensor] = {}
    with tracing_state(model):
        if crit in DATA_DEPENDENT and groups:
            prepare_data_dependent(crit, imp, model, calib_batches or [])
        for raw, root in groups:
            full = graph.get_pruning_group(root, _out_fn(graph, root), list(range(raw.channels)))
            scores = imp(full)
            if scores is None:  # a group without parameterised layers: keep the leading channels
                scores = torch.arange(raw.channels, 0, -1, dtype=torch.float32)
            found[raw.name] = scores.detach().float().cpu().clone()
        model.zero_grad(set_to_none=True)
    return found


def _view(graph: Any, raw: RawGroup, root: nn.Module) -> criteria.GroupView:
    """A full-width group as :class:`~prunepilot.pruning.criteria.GroupView`: its scored layers and indices."""
    full = graph.get_pruning_group(root, _out_fn(graph, root), list(range(raw.channels)))
    slices = []
    for item in full:
        dep, idxs, roots = item.dep, item.idxs, item.root_idxs
        if isinstance(dep.target.module, criteria.SCORED_TYPES) and all(r is not None for r in roots):
            side: criteria.Side = "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"
            slices.append(criteria.ChannelSlice(dep.target.module, side, tuple(map(int, idxs)), tuple(map(int, roots))))
    return criteria.GroupView(raw.name, raw.channels, raw.blocks, tuple(slices))


def group_scores(
    model: nn.Module,
    example_inputs: Any,
    importance: str = "l1",
    *,
    calib_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ignored: Sequence[str] = (),
    limits: Limits | None = None,
    widths: Mapping[str, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Channel importance per prunable group, exactly as :func:`prune_to_widths` ranks channels.

    Keeping the ``k`` highest scores of a group here keeps the channels :func:`prune_to_widths`
    (and ``apply_policy``) keeps at width ``k`` (barring exact ties): both call the same
    scoring on the same unpruned groups. One-shot supernets use it to order channels once.
    The model is not modified. ``synflow`` prunes iteratively towards target ``widths``; without
    them it ranks each group by masking it down to its narrowest width.

    Returns:
        Group name -> 1-D float CPU tensor of ``channels`` scores (higher is more important).
    """
    crit = canonical_importance(importance)
    by_name = dict(model.named_modules())
    graph, groups = analyse(model, example_inputs, [by_name[n] for n in ignored if n in by_name], limits=limits)
    try:
        return _score_groups(model, graph, groups, crit, calib_batches, example_inputs, widths)
    finally:
        release(graph)


def _out_fn(graph: Any, module: nn.Module) -> Any:
    return graph.get_pruner_of_module(module).prune_out_channels
