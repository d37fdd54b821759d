"""The one place where pruning policies meet a trial's parameter space, and Ray Tune's.

Strategies describe their trials with :class:`Uniform`, :class:`Choice` and :class:`Grid`
parameters (plain data, no Ray); :func:`to_tune` turns such a space into Tune's ``param_space``
for the Ray backend, and :func:`trial_params` expands it into the trials of the local backend
(grid variants times ``num_samples``, uniforms and choices drawn from a seeded generator, in
Tune's order). Policies are keep ratios per named group; group ``i`` is the parameter
``g{i:03d}`` (Optuna and Tune need plain, stable parameter names). With depth
(``evaluation.depth``), removable block ``j`` is the boolean parameter ``b{j:03d}`` (True:
removed). Also here: projecting a proposal into the budget.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from prunepilot.pruning import PruningSpace


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from ``[low, high]`` (by a sampler, when the strategy has one)."""

    low: float
    high: float


@dataclass(frozen=True)
class Grid:
    """One trial per value (times ``num_samples``)."""

    values: tuple[Any, ...]

    def __init__(self, values: Any) -> None:
        object.__setattr__(self, "values", tuple(values))


@dataclass(frozen=True)
class Choice:
    """One of ``values``, drawn uniformly (by a sampler, when the strategy has one, as a categorical)."""

    values: tuple[Any, ...]

    def __init__(self, values: Any) -> None:
        object.__setattr__(self, "values", tuple(values))


#: A trial's parameter space: names to :class:`Uniform`, :class:`Choice`, :class:`Grid` or constants.
ParamSpace = dict[str, Any]


def key(index: int) -> str:
    """Parameter name of group ``index``."""
    return f"g{index:03d}"


def block_key(index: int) -> str:
    """Parameter name of removable block ``index`` (its position in ``space.blocks``)."""
    return f"b{index:03d}"


def ratio_param_space(space: PruningSpace, lower: float, depth: bool = False) -> ParamSpace:
    """One ``Uniform(lower, 1)`` keep ratio per group; with ``depth``, then one
    ``Choice((False, True))`` per removable block (True: remove it)."""
    params: ParamSpace = {key(g.index): Uniform(lower, 1.0) for g in space.groups}
    if depth:
        params.update({block_key(i): Choice((False, True)) for i in range(len(space.blocks))})
    return params


def params_to_ratios(params: Mapping[str, Any], space: PruningSpace) -> dict[str, float]:
    """Keep ratios by group name from trial parameters made by :func:`ratio_param_space`."""
    return {g.name: float(params[key(g.index)]) for g in space.groups}


def params_to_removed_blocks(params: Mapping[str, Any], space: PruningSpace) -> tuple[str, ...]:
    """Names of the blocks the trial parameters remove (none without block parameters)."""
    return tuple(b.name for i, b in enumerate(space.blocks) if bool(params.get(block_key(i), False)))


def grid_size(param_space: ParamSpace) -> int:
    """Trials per sample: the product of the grids' lengths."""
    n = 1
    for v in param_space.values():
        if isinstance(v, Grid):
            n *= len(v.values)
    return n


def sampled(param_space: ParamSpace) -> dict[str, Uniform | Choice]:
    """The :class:`Uniform` and :class:`Choice` parameters (what a sampler proposes)."""
    return {k: v for k, v in param_space.items() if isinstance(v, Uniform | Choice)}


def to_tune(param_space: ParamSpace) -> dict[str, Any]:
    """Ray Tune's ``param_space`` (``tune.uniform``, ``tune.grid_search``) for the Ray backend."""
    from ray import tune

    out: dict[str, Any] = {}
    for k, v in param_space.items():
        if isinstance(v, Uniform):
            out[k] = tune.uniform(v.low, v.high)
        elif isinstance(v, Choice):
            out[k] = tune.choice(list(v.values))
        elif isinstance(v, Grid):
            out[k] = tune.grid_search(list(v.values))
        else:
            out[k] = v
    return out


def trial_params(param_space: ParamSpace, num_samples: int, seed: int) -> Iterator[dict[str, Any]]:
    """The local backend's trials: for each sample, every grid variant; uniforms and choices drawn seeded.

    Grid variants vary the last grid parameter fastest; uniforms and choices are drawn per trial
    in the space's key order from ``numpy.random.default_rng(seed)`` (a space without choices
    draws exactly what it drew before they existed).
    """
    rng = np.random.default_rng(seed)
    grids = {k: v.values for k, v in param_space.items() if isinstance(v, Grid)}
    for _ in range(num_samples):
        for combo in itertools.product(*grids.values()):
            chosen = dict(zip(grids, combo, strict=True))
            params: dict[str, Any] = {}
            for k, v in param_space.items():
                if isinstance(v, Uniform):
                    params[k] = float(rng.uniform(v.low, v.high))
                elif isinstance(v, Choice):
                    params[k] = v.values[int(rng.integers(len(v.values)))]
                else:
                    params[k] = chosen[k] if k in chosen else v
            yield params


def project_to_budget(
    ratios: Mapping[str, float],
    lower: float,
    budget_ms: float,
    latency_of: Callable[[Mapping[str, float]], float],
    steps: int = 18,
) -> tuple[dict[str, float], float]:
    """Shrink ``ratios`` towards ``lower`` until the predicted latency fits ``budget_ms``.

    Ratios become ``lower + s * (r - lower)`` with the largest ``s`` in [0, 1] that fits
    (bisection on the predicted latency, which falls as ``s`` falls). Returns the ratios and
    ``s`` (1.0 when the proposal already fits). The relative shape of the proposal is kept,
    so a strategy's preference between groups survives the projection. Removed blocks stay as
    proposed: ``latency_of`` measures the ratios with them (the strategy's closure fixes them).
    """

    def at(s: float) -> dict[str, float]:
        return {n: lower + s * (r - lower) for n, r in ratios.items()}

    if latency_of(ratios) <= budget_ms:
        return dict(ratios), 1.0
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        if latency_of(at(mid)) <= budget_ms:
            lo = mid
        else:
            hi = mid
    return at(lo), lo
