"""How good is a latency model? Metrics of predicted against measured latencies (``hw-eval``).

* **MAPE**: mean of ``|pred - meas| / meas``.
* **within ±5% / ±10%**: share of candidates whose relative error is at most 5% / 10%.
* **Spearman**: rank correlation (what a search needs: the right order of candidates).
* **false within-budget rate**: among candidates whose *measured* latency is over the budget,
  the share the model calls within budget (``pred <= budget``); the budget defaults to the
  median measured latency. This is the error that lets a too-slow model through a search.

Example:
    >>> m = hw_metrics([10.0, 20.0, 30.0], [10.5, 19.0, 33.0])
    >>> round(m.mape, 3), m.within_10
    (0.06, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from prunepilot.errors import ConfigError


@dataclass(frozen=True)
class HwMetrics:
    """Accuracy of one latency model on one set of candidates (shares in [0, 1])."""

    n: int
    mape: float
    within_5: float
    within_10: float
    spearman: float
    false_within_budget: float
    budget_ms: float
    over_budget: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def rankdata(x: ArrayLike) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as ``scipy.stats.rankdata``)."""
    a = np.asarray(x, dtype=float)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(1, len(a) + 1)
    sorted_a = a[order]
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sorted_a[j + 1] == sorted_a[i]:
            j += 1
        if j > i:
            ranks[order[i : j + 1]] = (i + j + 2) / 2
        i = j + 1
    return ranks


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation; ``nan`` when either side is constant or n < 2."""
    ra, rb = rankdata(a), rankdata(b)
    if len(ra) < 2:
        return float("nan")
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def hw_metrics(measured: Sequence[float], predicted: Sequence[float], budget_ms: float | None = None) -> HwMetrics:
    """Compare ``predicted`` with ``measured`` latencies (same order, ms).

    Raises:
        ConfigError: different lengths, no samples, or a non-positive measurement.
    """
    meas = np.asarray(measured, dtype=float)
    pred = np.asarray(predicted, dtype=float)
    if meas.shape != pred.shape or meas.ndim != 1 or len(meas) == 0:
        raise ConfigError(f"need equal, non-empty lists of latencies; got {len(meas)} measured, {len(pred)} predicted")
    if np.any(meas <= 0):
        raise ConfigError("measured latencies must be positive")
    rel = np.abs(pred - meas) / meas
    budget = float(np.median(meas)) if budget_ms is None else float(budget_ms)
    over = meas > budget
    false_in = float(np.mean(pred[over] <= budget)) if over.any() else 0.0
    return HwMetrics(
        n=len(meas),
        mape=float(rel.mean()),
        within_5=float(np.mean(rel <= 0.05)),
        within_10=float(np.mean(rel <= 0.10)),
        spearman=spearman(meas, pred),
        false_within_budget=false_in,
        budget_ms=budget,
        over_budget=int(over.sum()),
    )
