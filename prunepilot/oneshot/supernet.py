"""The supernet: one copy of a model that runs at any policy's widths on its leading channels.

Built once from a trained model and its :class:`~prunepilot.pruning.PruningSpace`:

1. **Order** every group's channels by the search's importance criterion, with
   :func:`prunepilot.pruning.adapter.group_scores` -- the very scores ``apply_policy`` ranks
   channels by -- sorted descending (stable).
2. **Permute** each group's channels into that order, once, in every module of the group: output
   rows of its convs/linears, its batch-norm parameters and statistics, and input columns of
   the layers that read it (blocks of ``k`` columns when a flatten feeds a linear layer).
   Permuting a hidden dimension consistently leaves the function unchanged, so the supernet at
   full width reproduces the original model.
3. **Slim** every conv/linear/batch-norm layer (:mod:`prunepilot.oneshot.slim`): at widths ``w``
   each group runs on its leading ``w[g]`` channels.

**Which channels, and why they are apply_policy's.** The leading ``k`` channels of a group are
its ``k`` highest-scoring ones under the criterion. ``apply_policy`` keeps the top ``k`` by the
same criterion computed the same way on the same (base) weights, so the supernet at a policy's
widths, before any training, *is* the pruned model (same channels, same weights; tests check
outputs agree). Exact score ties at the cut could let ``topk`` pick another tied channel;
:attr:`Supernet.ties` counts such groups. After supernet training the weights differ from the
base model's but the channel identities do not: a policy exported from the supernet and applied
by the apply step to the base model keeps the channels the supernet used. To deploy the
supernet's own trained weights instead, :meth:`Supernet.export` builds the physically pruned
model from them (its outputs equal the supernet's at those widths, by construction and test).

**Batch norm.** Statistics are shared across widths; before scoring a width assignment they are
recalibrated on calibration batches at that width (:meth:`Supernet.recalibrate`), as
slimmable and universally slimmable networks do.

Supported layers: convolutions (dense or depthwise), linear and batch-norm layers, with residual
adds and flattens between them (the zoo's ResNets, MobileNetV2, VGG and simple CNNs;
torchvision ResNets/MobileNets). Grouped (non-depthwise) convolutions, transposed
convolutions, concatenations of groups, LayerNorm/attention over pruned channels raise
:class:`SupernetError` naming the module.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunepilot.errors import PruningError
from prunepilot.oneshot.slim import WidthState, set_submodule, slim_layer
from prunepilot.pruning import PruningPolicy, PruningSpace, adapter, apply_policy, recalibrate_bn

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


class SupernetError(PruningError):
    """The model has a layer or coupling the leading-channel supernet cannot represent."""


@dataclass(frozen=True)
class LayerInfo:
    """One conv/linear layer of the supernet and the groups on its two sides (None: not pruned)."""

    name: str
    kind: str  # "conv" | "depthwise" | "linear"
    out_group: str | None
    in_group: str | None
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Score:
    """Proxy score of one width assignment on held-out batches."""

    accuracy: float
    loss: float

    def key(self) -> tuple[float, float]:
        """Sort key: higher accuracy first, then lower loss."""
        return (self.accuracy, -self.loss)


class Supernet:
    """A model that runs at any width assignment of its pruning space. Build with :meth:`build`.

    Attributes:
        space: The pruning space of the base model.
        base: The original model (never modified).
        model: The supernet's own permuted, slimmed copy (train this one).
        state: Current widths / weight overrides shared by the slim layers.
        order: Per group, original channel indices in supernet order (most important first).
        layers: Every conv/linear layer with the groups on its output and input sides.
        importance: Criterion the channels were ordered by.
        ties: Groups whose importance scores have exact ties (the ordering guarantee is
            then up to the tie-break).
    """

    def __init__(
        self,
        space: PruningSpace,
        base: nn.Module,
        model: nn.Module,
        state: WidthState,
        order: dict[str, torch.Tensor],
        layers: tuple[LayerInfo, ...],
        importance: str,
        example: tuple[Any, ...],
        ties: tuple[str, ...],
    ) -> None:
        self.space, self.base, self.model, self.state = space, base, model, state
        self.order, self.layers, self.importance, self.example, self.ties = order, layers, importance, example, ties

    # --- construction -------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        model: nn.Module,
        example_inputs: Any,
        *,
        space: PruningSpace | None = None,
        importance: str = "l1",
        calib_batches: Batches | None = None,
        verify: bool = True,
    ) -> Supernet:
        """Order, permute and slim a copy of ``model`` (which is left untouched).

        Args:
            model: The trained base model.
            example_inputs: A small batch for tracing.
            space: The model's pruning space (built here if None; its ignored layers are used).
            importance: Channel-ordering criterion (the search's ``evaluation.importance``).
            calib_batches: Batches for the data-dependent criteria (taylor, hessian).
            verify: Check the supernet at full width against ``model`` and at a smaller width
                against its own export (one pruning); raises :class:`SupernetError` on mismatch.

        Raises:
            SupernetError: a layer or coupling of the model is not supported (names it).
        """
        example = adapter.example_tuple(example_inputs)
        base = model
        if space is None:
            space = PruningSpace.build(model, example)
        crit = adapter.canonical_importance(importance)
        scores = adapter.group_scores(
            base, example, crit, calib_batches=list(calib_batches or []), ignored=space.ignored
        )
        named = dict(base.named_modules())
        graph, raw = adapter.analyse(
            base, example, [named[n] for n in space.ignored if n in named], what=type(base).__name__
        )
        adapter.release(graph)
        order = {g.name: torch.sort(scores[g.name], descending=True, stable=True).indices for g, _ in raw}
        ties = tuple(n for n, s in scores.items() if torch.unique(s).numel() < s.numel())

        net = copy.deepcopy(base).eval()
        modules = dict(net.named_modules())
        out_group: dict[str, str] = {}
        in_group: dict[str, str] = {}
        with torch.no_grad():
            for g, _root in raw:
                if g.blocks > 1:
                    raise SupernetError(
                        f"group {g.name!r} keeps channels in {g.blocks} blocks (grouped convolution or "
                        "attention heads); the leading-channel supernet supports dense and depthwise "
                        "convolutions only; add its layers to model.ignored_layers"
                    )
                for dep in g.deps:
                    module = modules.get(dep.module)
                    _check_supported(dep.module, module)
                    assert module is not None
                    if dep.side == "out" or _is_depthwise(module):
                        if out_group.get(dep.module) == g.name:
                            continue  # a depthwise layer listed on both sides: permuted once
                        if dep.module in out_group:
                            raise SupernetError(
                                f"module {dep.module!r} carries channels of groups {out_group[dep.module]!r} "
                                f"and {g.name!r} (a concatenation); not supported"
                            )
                        out_group[dep.module] = g.name
                        _permute_out(dep.module, module, order[g.name], g.channels)
                    else:
                        if dep.count != dep.full or dep.module in in_group:
                            raise SupernetError(
                                f"module {dep.module!r} reads {dep.count} of its {dep.full} inputs from group "
                                f"{g.name!r} (a concatenation of groups); not supported"
                            )
                        in_group[dep.module] = g.name
                        _permute_in(dep.module, module, order[g.name], g.channels)

        state = WidthState()
        layers: list[LayerInfo] = []
        for name, module in list(net.named_modules()):
            if not _supported(module):
                continue  # in no group (checked above), so it never sees sliced channels
            slim = slim_layer(module, name, out_group.get(name), state)
            if slim is None:
                continue
            if isinstance(module, nn.modules.conv._ConvNd | nn.Linear):
                kind = "linear" if isinstance(module, nn.Linear) else "depthwise" if module.groups > 1 else "conv"
                ing = out_group.get(name) if kind == "depthwise" else in_group.get(name)
                layers.append(LayerInfo(name, kind, out_group.get(name), ing, tuple(module.weight.shape)))
            slim.train(module.training)
            set_submodule(net, name, slim)
        sup = cls(space, base, net, state, order, tuple(layers), crit, example, ties)
        if verify:
            sup.verify()
        return sup

    # --- running at widths -----------------------------------------------------------------
    @contextmanager
    def at(self, widths: Mapping[str, int], weights: Mapping[str, torch.Tensor] | None = None) -> Iterator[None]:
        """Run the supernet at ``widths`` (and with weight overrides) inside the block."""
        before = (dict(self.state.widths), dict(self.state.weights))
        self.state.widths = {k: int(v) for k, v in widths.items()}
        if weights is not None:
            self.state.weights = dict(weights)
        try:
            yield
        finally:
            self.state.widths, self.state.weights = before

    def __call__(self, *inputs: Any) -> Any:
        return self.model(*inputs)

    def recalibrate(
        self, widths: Mapping[str, int], batches: Iterable[Any], weights: Mapping[str, torch.Tensor] | None = None
    ) -> None:
        """Re-estimate batch-norm statistics at ``widths`` (shared statistics are overwritten)."""
        with self.at(widths, weights):
            recalibrate_bn(self.model, batches)

    @torch.no_grad()
    def score(
        self,
        widths: Mapping[str, int],
        calib: Batches,
        val: Batches,
        weights: Mapping[str, torch.Tensor] | None = None,
    ) -> Score:
        """BN recalibration on ``calib`` at ``widths``, then accuracy and loss on ``val``."""
        self.recalibrate(widths, calib, weights)
        was = self.model.training
        self.model.eval()
        correct = total = 0
        loss = 0.0
        try:
            with self.at(widths, weights):
                for x, y in val:
                    logits = self.model(x)
                    loss += float(F.cross_entropy(logits, y, reduction="sum"))
                    correct += int((logits.argmax(1) == y).sum())
                    total += int(y.shape[0])
        finally:
            self.model.train(was)
        if total == 0:
            raise ValueError("Supernet.score needs at least one validation batch")
        return Score(correct / total, loss / total)

    def macs(self, widths: Mapping[str, int]) -> int:
        """MACs per sample of the supernet at ``widths``, counted on a forward pass."""
        trace: list[tuple[str, int]] = []
        self.state.trace = trace
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self.at(widths):
                self.model(*self.example)
        finally:
            self.state.trace = None
            self.model.train(was)
        return sum(m for _, m in trace)

    # --- export ----------------------------------------------------------------------------
    def policy(self, widths: Mapping[str, int], round_to: int = 1, **metadata: Any) -> PruningPolicy:
        """The policy with exactly ``widths`` and this supernet's criterion."""
        full = self.space.full_widths()
        ratios = {n: int(widths.get(n, c)) / c for n, c in full.items()}
        policy = PruningPolicy.from_ratios(
            self.space, ratios, round_to=round_to, importance=self.importance, metadata=metadata
        )
        asked = {n: int(widths.get(n, c)) for n, c in full.items()}
        if policy.channels != asked:
            raise ValueError(f"widths {asked} are not reachable with round_to={round_to}: got {policy.channels}")
        return policy

    def export(self, widths: Mapping[str, int], weights: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
        """A physically pruned model at ``widths`` carrying the supernet's (or given) weights.

        The structure comes from ``apply_policy`` on the base model; every tensor is then the
        leading slice of the supernet's (current BN statistics included), so the result
        computes what the supernet computes at ``widths``.
        """
        policy = self.policy(widths)
        pruned = apply_policy(self.base, policy, self.example, space=self.space, importance="l1")
        source = {k: v.detach() for k, v in self.model.state_dict().items()}
        for name, w in (weights or {}).items():
            source[f"{name}.weight"] = w.detach()
        target = pruned.state_dict()
        new = {}
        for key, t in target.items():
            s = source[key]
            new[key] = s[tuple(slice(0, n) for n in t.shape)].clone() if t.dim() else s.clone()
        pruned.load_state_dict(new, strict=True)
        return pruned.eval()

    def verify(self, atol: float = 1e-4) -> None:
        """Full width == base model, and a smaller width == its own export (eval mode)."""
        x = self.example
        was = (self.base.training, self.model.training)
        self.base.eval()
        self.model.eval()
        try:
            with torch.no_grad():
                ref = self.base(*x)
                with self.at(self.space.full_widths()):
                    got = self.model(*x)
                _close("full width vs the base model", got, ref, atol)
                half = PruningPolicy.uniform(self.space, 0.5).channels
                with self.at(half):
                    got = self.model(*x)
                _close("half width vs its exported model", got, self.export(half)(*x), atol)
        finally:
            self.base.train(was[0])
            self.model.train(was[1])


def _close(what: str, got: torch.Tensor, ref: torch.Tensor, atol: float) -> None:
    scale = float(ref.abs().max()) + 1.0
    if got.shape != ref.shape or not torch.allclose(got, ref, atol=atol * scale, rtol=1e-4):
        diff = float((got - ref).abs().max()) if got.shape == ref.shape else float("nan")
        raise SupernetError(
            f"supernet check failed ({what}): shapes {tuple(got.shape)} vs {tuple(ref.shape)}, max diff {diff:.3g}. "
            "The model likely uses its channels outside conv/linear/batch-norm layers (a functional op "
            "or a bare parameter); add such layers to model.ignored_layers"
        )


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1


def _supported(module: nn.Module) -> bool:
    try:
        _check_supported("", module)
    except SupernetError:
        return False
    return True


def _check_supported(name: str, module: nn.Module | None) -> None:
    if module is None:
        raise SupernetError(f"{name!r} is a bare parameter coupled to pruned channels; not supported")
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed or module.padding_mode != "zeros":
            raise SupernetError(f"convolution {name!r} is transposed or not zero-padded; not supported")
        if 1 < module.groups and not module.groups == module.in_channels == module.out_channels:
            raise SupernetError(f"convolution {name!r} has {module.groups} groups; only dense/depthwise supported")
        return
    if isinstance(module, nn.Linear | nn.modules.batchnorm._BatchNorm):
        return
    raise SupernetError(
        f"module {name!r} ({type(module).__name__}) carries pruned channels; the supernet supports "
        "Conv/Linear/BatchNorm layers only; add it to model.ignored_layers"
    )


def _permute_out(name: str, module: nn.Module, order: torch.Tensor, channels: int) -> None:
    tensors: list[Any] = [getattr(module, "weight", None), getattr(module, "bias", None)]
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        tensors += [module.running_mean, module.running_var]
    for t in tensors:
        if t is None:
            continue
        if t.shape[0] != channels:
            raise SupernetError(f"{name!r}: {t.shape[0]} output channels, its group has {channels}")
        t.data = t.data.index_select(0, order).contiguous()


def _permute_in(name: str, module: nn.Module, order: torch.Tensor, channels: int) -> None:
    weight = getattr(module, "weight", None)
    if weight is None:
        return
    size = int(weight.shape[1])
    if size % channels:
        raise SupernetError(f"{name!r}: {size} input features do not split into {channels} channels")
    k = size // channels  # k > 1: a flatten of k positions per channel feeds this layer
    idx = (order[:, None] * k + torch.arange(k)[None, :]).reshape(-1)
    weight.data = weight.data.index_select(1, idx).contiguous()
