"""Group values and the latency of one width assignment as a sum of group terms.

See :mod:`prunepilot.search.knapsack` for the formulation.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from prunepilot.errors import PruningError
from prunepilot.hw_models.base import LatencyModel
from prunepilot.pruning import PruningSpace
from prunepilot.pruning.cost import ModuleRecord, layer_at
from prunepilot.pruning.layers import LayerShape
from prunepilot.pruning.selection import select_keep
from prunepilot.search.knapsack.mckp import (
    LOSS_CHANGE_CRITERIA,
    MAX_TERM_SIZE,
    JointTerm,
)

Widths = dict[str, int]


def group_values(
    scores: Mapping[str, torch.Tensor],
    choices: Mapping[str, Sequence[int]],
    normalize: bool,
    blocks: Mapping[str, int] | None = None,
) -> dict[str, dict[int, float]]:
    """``value[g][w]``: the summed scores of the ``w`` channels the pruner keeps in group ``g``.

    Those are the ``w`` highest scores, or, for groups of ``blocks[g] > 1`` aligned blocks
    (grouped convolutions, heads), the channels :func:`~prunepilot.pruning.selection.select_keep`
    picks. With ``normalize`` each group's scores are divided by their total absolute value.
    """
    out: dict[str, dict[int, float]] = {}
    for g, widths in choices.items():
        s = scores[g].detach().double().flatten()
        if normalize:
            s = s / max(float(s.abs().sum()), 1e-30)
        n_blocks = int((blocks or {}).get(g, 1))
        if n_blocks > 1:
            out[g] = {int(w): float(s[select_keep(s, int(w), n_blocks)].sum()) for w in widths}
        else:
            cum = torch.cumsum(torch.sort(s, descending=True).values, 0)
            out[g] = {int(w): float(cum[int(w) - 1]) for w in widths}
    return out


def normalizes(importance: str) -> bool:
    """Whether :func:`group_values` should normalise scores of criterion ``importance`` per group."""
    return importance.lower() not in LOSS_CHANGE_CRITERIA


def compute_records(space: PruningSpace) -> list[ModuleRecord]:
    """The space's compute-layer records, in the order of :meth:`PruningSpace.layers`."""
    return [r for r in space.cost.records if r.kind not in ("scaled", "param")]


def record_groups(rec: ModuleRecord, names: Sequence[str]) -> tuple[str, ...]:
    """The groups (of ``names``, in that order) whose widths change this layer's shape."""
    touched = {g for g, _, _ in rec.out_terms + rec.in_terms}
    return tuple(g for g in names if g in touched)


@dataclass(frozen=True)
class LatencyTable:
    """A layer-additive latency model's prediction over a width lattice, as group terms.

    ``predict_ms(w) = constant + sum_g unary[g][i_g] + sum_T T.ms[i_T]`` with ``i`` the choice
    indices of ``w``; equal to ``latency.predict_ms(space, w)`` (checked by :meth:`build`).
    """

    choices: dict[str, tuple[int, ...]]
    constant: float
    unary: dict[str, np.ndarray]
    joint: tuple[JointTerm, ...]
    seconds: float

    @classmethod
    def build(
        cls,
        space: PruningSpace,
        choices: Mapping[str, Sequence[int]],
        latency: LatencyModel,
        batch_size: int = 1,
    ) -> LatencyTable:
        """Profile every layer at every width combination of the groups it depends on.

        Raises:
            PruningError: the latency model measures (it cannot predict from layers), a layer
                depends on too many width combinations, or the model is not a sum over layers.
        """
        if latency.requires_model:
            raise PruningError(
                f"the knapsack needs a latency model that predicts from layer shapes (lut, roofline, learned, "
                f"macs); {latency.name!r} measures built models: profile a lookup table for the device "
                "(`prunepilot profile`) or use a calibrated roofline"
            )
        started = time.perf_counter()
        names = tuple(space.names)
        opts = {g: tuple(int(w) for w in choices[g]) for g in names}
        records = compute_records(space)
        full_layers = space.layers(space.full_widths())
        if [r.name for r in records] != [s.name for s in full_layers]:  # the order space.layers uses
            raise PruningError("the space's cost records do not match its layers; rebuild the PruningSpace")
        empty = float(latency.predict_layers([], batch_size).ms)

        def layer_ms(shape: LayerShape | None) -> float:
            assert shape is not None
            return float(latency.predict_layers([shape], batch_size).ms) - empty

        constant = empty
        unary = {g: np.zeros(len(opts[g])) for g in names}
        tables: dict[tuple[str, ...], tuple[np.ndarray, list[str]]] = {}
        for rec in records:
            deps = record_groups(rec, names)
            if not deps:
                constant += layer_ms(layer_at(rec, {})[2])
                continue
            dims = tuple(len(opts[g]) for g in deps)
            size = int(np.prod(dims))
            if size > MAX_TERM_SIZE:
                raise PruningError(
                    f"layer {rec.name!r} depends on groups {list(deps)} ({size} width combinations, more than "
                    f"{MAX_TERM_SIZE}); give the knapsack fewer width choices per group (setting max_choices)"
                )
            ms = np.empty(dims)
            for idx in itertools.product(*(range(d) for d in dims)):
                widths = {g: opts[g][i] for g, i in zip(deps, idx, strict=True)}
                ms[idx] = layer_ms(layer_at(rec, widths)[2])
            if len(deps) == 1:
                unary[deps[0]] += ms
            else:
                acc, layers = tables.setdefault(deps, (np.zeros(dims), []))
                acc += ms
                layers.append(rec.name)
        joint = tuple(JointTerm(g, ms, tuple(layers)) for g, (ms, layers) in tables.items())
        table = cls(opts, constant, unary, joint, time.perf_counter() - started)
        table.check(space, latency, batch_size)
        return table

    def index(self, widths: Mapping[str, int]) -> dict[str, int]:
        """Choice index of each group's width (raises for a width off the lattice)."""
        try:
            return {g: self.choices[g].index(int(widths[g])) for g in self.choices}
        except ValueError:
            bad = {g: int(widths[g]) for g in self.choices if int(widths[g]) not in self.choices[g]}
            raise PruningError(f"widths {bad} are not among the knapsack's choices") from None

    def predict_ms(self, widths: Mapping[str, int]) -> float:
        """The latency of ``widths`` from the terms (equals the model's whole-model prediction)."""
        i = self.index(widths)
        total = self.constant + sum(float(self.unary[g][i[g]]) for g in self.choices)
        return total + sum(float(t.ms[tuple(i[g] for g in t.groups)]) for t in self.joint)

    def check(self, space: PruningSpace, latency: LatencyModel, batch_size: int = 1, points: int = 4) -> None:
        """Raise unless the terms reproduce ``latency.predict_ms`` at lattice corners and random points."""
        gen = np.random.default_rng(0)
        probes = [{g: c[-1] for g, c in self.choices.items()}, {g: c[0] for g, c in self.choices.items()}]
        probes += [{g: c[int(gen.integers(len(c)))] for g, c in self.choices.items()} for _ in range(points)]
        for widths in probes:
            whole = float(latency.predict_ms(space, widths, batch_size).ms)
            terms = self.predict_ms(widths)
            if abs(whole - terms) > 1e-6 * max(1.0, abs(whole)):
                raise PruningError(
                    f"latency model {latency.name!r} is not a sum over layers (at widths {widths} the whole-model "
                    f"prediction is {whole:.6g} ms, its layers sum to {terms:.6g} ms); the knapsack needs a "
                    "layer-additive model: roofline, lut, learned, macs or params"
                )
