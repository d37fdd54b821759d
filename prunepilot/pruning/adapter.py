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
* Finally, every group's width after pruning is **asserted** against the policy.

Criteria beyond Torch-Pruning's own are in :mod:`prunepilot.pruning.criteria`; they get each
group as plain data (:func:`_view`), and the pruning is Torch-Pruning's as for the others. What
needs no Torch-Pruning lives beside this module and is re-exported here: criterion names and
channel selection in :mod:`prunepilot.pruning.selection`, the plain-data group records in
:mod:`prunepilot.pruning.groups`, post-pruning fix-ups in :mod:`prunepilot.pruning.fixups`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from prunepilot.errors import GraphAnalysisError, PruningError
from prunepilot.pruning import criteria
from prunepilot.pruning.fixups import FIXUPS as FIXUPS
from prunepilot.pruning.fixups import register_fixup as register_fixup
from prunepilot.pruning.fixups import run_fixups
from prunepilot.pruning.groups import DepRecord, KeptIndices, RawGroup, channel_blocks
from prunepilot.pruning.guard import Limits, bounded
from prunepilot.pruning.selection import DATA_DEPENDENT, canonical_importance, needs_data_message, select_keep
from prunepilot.pruning.selection import IMPORTANCE_CRITERIA as IMPORTANCE_CRITERIA

TORCH_PRUNING_VERSION: str = str(getattr(tp, "__version__", "unknown"))

_ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
_STOP_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention, nn.Embedding, nn.LSTM)


def example_tuple(example_inputs: Any) -> tuple[Any, ...]:
    """Normalise example inputs to a tuple of positional arguments."""
    if isinstance(example_inputs, tuple | list):
        return tuple(example_inputs)
    return (example_inputs,)


@contextmanager
def _tracing_state(model: nn.Module) -> Iterator[None]:
    """Enable autograd and all ``requires_grad`` flags; restore flags and modes afterwards."""
    modes = {name: m.training for name, m in model.named_modules()}
    # By name: pruning replaces Parameter objects (new ones default to requires_grad=True).
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, True))
        for name, m in model.named_modules():
            m.train(modes.get(name, m.training))


def _module_names(model: nn.Module) -> dict[Any, str]:
    names: dict[Any, str] = {m: n for n, m in model.named_modules()}
    names.update({p: n for n, p in model.named_parameters()})
    return names


def output_layers(model: nn.Module, graph: Any) -> list[nn.Module]:
    """Conv/Linear layers whose output channels reach the model output unchanged.

    Walks Torch-Pruning's traced graph forward from each layer through channel-preserving
    operations (norms, activations, adds, reshapes, depthwise convs); reaching the model
    output before any channel-mixing layer makes it an output layer (a classifier head).
    """
    found: list[nn.Module] = []
    for module, node in graph.module2node.items():
        if not isinstance(module, _ROOT_TYPES):
            continue
        if not node.outputs:
            found.append(module)
            continue
        stack, seen = list(node.outputs), set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            mod = n.module
            if isinstance(mod, _STOP_TYPES) and tp.ops.module2type(mod) != tp.ops.OPTYPE.DEPTHWISE_CONV:
                continue
            if n.type == tp.ops.OPTYPE.OUTPUT or not n.outputs:
                found.append(module)
                break
            stack.extend(n.outputs)
    return found


def build_graph(model: nn.Module, example_inputs: Any, *, what: str = "model", limits: Limits | None = None) -> Any:
    """Trace ``model`` into a Torch-Pruning DependencyGraph, bounded in time and memory.

    Raises:
        GraphAnalysisError: tracing failed or exceeded its limits; names the model and reason.
    """
    with _tracing_state(model), bounded(f"graph analysis of {what}", limits):
        try:
            return tp.DependencyGraph().build_dependency(
                model,
                example_inputs=example_tuple(example_inputs),
                unwrapped_parameters=None,
                customized_pruners={},
                ignored_layers=[],
                ignored_params=[],
                verbose=False,
            )
        except GraphAnalysisError:
            raise
        except Exception as exc:  # torch-pruning raises bare errors (ZeroDivisionError, ...)
            raise GraphAnalysisError(f"Torch-Pruning could not analyse {what}: {type(exc).__name__}: {exc}") from exc


def list_groups(model: nn.Module, graph: Any, ignored: Sequence[nn.Module] = ()) -> list[tuple[RawGroup, nn.Module]]:
    """All prunable dependency groups, in model order, with their root module.

    A group is named by its first output-pruned conv/linear in ``model.named_modules()``
    order, which is stable across processes and checkpoints of the same architecture.
    """
    names = _module_names(model)
    order = {m: i for i, (_, m) in enumerate(model.named_modules())}
    skip = list(ignored) + output_layers(model, graph)
    found: list[tuple[RawGroup, nn.Module]] = []
    with _tracing_state(model):
        groups = list(graph.get_all_groups(ignored_layers=list(skip), root_module_types=list(_ROOT_TYPES)))
    for group in groups:
        deps: dict[tuple[str, str], tuple[int, int]] = {}
        roots: list[nn.Module] = []
        blocks = 1
        for dep, idxs in group:
            target = dep.target.module
            if target not in names:  # Torch-Pruning's own op nodes (adds, reshapes)
                continue
            side = "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"
            key = (names[target], side)
            full = _size_of(graph, dep.target, side, len(idxs))
            deps[key] = (max(deps.get(key, (0, 0))[0], len(idxs)), full)
            if isinstance(target, nn.Module):
                blocks = math.lcm(blocks, channel_blocks(target))
                if side == "out" and isinstance(target, _ROOT_TYPES):
                    roots.append(target)
        if not roots:
            continue
        root = min(roots, key=lambda m: order.get(m, 1 << 30))
        channels = int(graph.get_out_channels(root))
        if channels % blocks:
            blocks = 1
        records = tuple(DepRecord(m, s, c, f) for (m, s), (c, f) in sorted(deps.items()))
        found.append((RawGroup(names[root], channels, blocks, records), root))
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
    if name == "l1":
        return tp.importance.MagnitudeImportance(p=1, target_types=list(types))
    if name == "l2":
        return tp.importance.MagnitudeImportance(p=2, target_types=list(types))
    if name == "bn-scale":
        return tp.importance.BNScaleImportance()
    if name == "taylor":
        return tp.importance.TaylorImportance(target_types=list(types))
    if name == "hessian":
        return tp.importance.HessianImportance(target_types=list(types))
    return tp.importance.RandomImportance()


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _prepare_data_dependent(
    name: str, imp: Any, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    """Populate gradients (taylor) or accumulated squared gradients (hessian)."""
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    model.eval()  # gradients only: BatchNorm statistics must not move
    model.zero_grad(set_to_none=True)
    if name == "hessian":
        accu: dict[nn.Parameter, torch.Tensor] = {}
        count: dict[nn.Parameter, int] = {}
        for x, y in batches:
            losses = loss_fn(model(x), y)
            for loss in losses:
                model.zero_grad(set_to_none=True)
                loss.backward(retain_graph=True)
                for p in model.parameters():
                    if p.grad is not None:
                        accu[p] = accu.get(p, torch.zeros_like(p)) + p.grad.detach() ** 2
                        count[p] = count.get(p, 0) + 1
        if not count:
            raise PruningError(needs_data_message("hessian"))
        imp._accu_grad, imp._counter = accu, count
        model.zero_grad(set_to_none=False)  # the criterion writes into existing .grad tensors
        return
    n = 0
    for x, y in batches:
        loss_fn(model(x), y).mean().backward()
        n += 1
    if n == 0:
        raise PruningError(needs_data_message("taylor"))


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
    graph = build_graph(model, example_inputs, limits=limits)
    groups = list_groups(model, graph, ignored_modules)
    known = {g.name for g, _ in groups}
    unknown = sorted(set(widths) - known)
    if unknown:
        raise PruningError(f"groups {unknown} are not prunable groups of this model; groups: {sorted(known)}")
    for raw, _root in groups:
        want = int(widths.get(raw.name, raw.channels))
        if not 1 <= want <= raw.channels or want % raw.blocks:
            raise PruningError(
                f"group {raw.name!r}: width {want} is not allowed; it must be in "
                f"[{raw.blocks}, {raw.channels}] and a multiple of {raw.blocks}"
            )
    to_prune = [(raw, root) for raw, root in groups if int(widths.get(raw.name, raw.channels)) < raw.channels]
    # Score every group on the unpruned model first; indices of one group do not move when
    # another group is pruned, so the plan stays valid while it is carried out.
    scores = _score_groups(model, graph, to_prune, crit, calib_batches, example_inputs, widths)
    names = _module_names(model)
    with _tracing_state(model):
        for raw, root in to_prune:
            keep = select_keep(scores[raw.name], int(widths[raw.name]), raw.blocks)
            drop = sorted(set(range(raw.channels)) - set(keep))
            group = graph.get_pruning_group(root, _out_fn(graph, root), drop)
            if kept is not None:
                for dep, idxs in group:
                    if isinstance(dep.target.module, nn.Module) and dep.target.module in names:
                        side = "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"
                        full = _size_of(graph, dep.target, side, len(idxs))
                        key = (names[dep.target.module], side)
                        kept[key] = tuple(sorted(set(kept.get(key, range(full))) - {int(i) for i in idxs}))
            group.prune()
        model.zero_grad(set_to_none=True)
    for raw, root in groups:
        want = int(widths.get(raw.name, raw.channels))
        got = int(graph.get_out_channels(root))
        if got != want:
            raise PruningError(
                f"Torch-Pruning left group {raw.name!r} with {got} channels; the policy asked for {want}"
            )
    run_fixups(model, example_tuple(example_inputs))
    return model


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
        with _tracing_state(model):
            example = example_tuple(example_inputs)
            kw: dict[str, Any] = {"batches": batches, "example_inputs": example, "widths": widths, "keep": select_keep}
            got = criteria.channel_scores(crit, model, views, **kw)
            model.zero_grad(set_to_none=True)
        return {name: s.detach().float().cpu().clone() for name, s in got.items()}
    imp = _make_importance(crit)
    found: dict[str, torch.Tensor] = {}
    with _tracing_state(model):
        if crit in DATA_DEPENDENT and groups:
            _prepare_data_dependent(crit, imp, model, calib_batches or [])
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
    graph = build_graph(model, example_inputs, limits=limits)
    groups = list_groups(model, graph, [by_name[n] for n in ignored if n in by_name])
    return _score_groups(model, graph, groups, crit, calib_batches, example_inputs, widths)


def _out_fn(graph: Any, module: nn.Module) -> Any:
    return graph.get_pruner_of_module(module).prune_out_channels
