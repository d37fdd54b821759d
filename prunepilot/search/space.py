"""The one place where pruning policies meet Ray Tune's ``param_space``.

Tune configurations are flat dicts of floats; policies are keep ratios per named group.
Group ``i`` is the key ``g{i:03d}`` (Optuna and Tune need plain, stable parameter names).
Also here: projecting a proposal into the latency budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ray import tune

from prunepilot.pruning import PruningSpace


def key(index: int) -> str:
    """Tune parameter name of group ``index``."""
    return f"g{index:03d}"


def ratio_param_space(space: PruningSpace, lower: float) -> dict[str, Any]:
    """One ``tune.uniform(lower, 1)`` keep ratio per group."""
    return {key(g.index): tune.uniform(lower, 1.0) for g in space.groups}


def params_to_ratios(params: Mapping[str, Any], space: PruningSpace) -> dict[str, float]:
    """Keep ratios by group name from a Tune config made by :func:`ratio_param_space`."""
    return {g.name: float(params[key(g.index)]) for g in space.groups}


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
    so a strategy's preference between groups survives the projection.
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
