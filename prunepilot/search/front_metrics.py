"""Figures of merit of a front for one user's latency budget.

:func:`~prunepilot.search.pareto.hypervolume` scores a whole front against a reference point;
a user with a budget can only pick points within it. :func:`budget_hypervolume` scores what
that user can pick: points over the budget count for nothing, so a strategy that spreads its
evaluations over the whole latency range does not win on points this budget rules out.

Example:
    >>> front = [{"latency_ms": 2.0, "accuracy": 0.5}, {"latency_ms": 6.0, "accuracy": 0.8}]
    >>> round(budget_hypervolume(front, 10.0), 6)  # (0.5 * 4 + 0.8 * 4) / 10
    0.52
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["budget_hypervolume"]


def budget_hypervolume(front: Iterable[Mapping[str, Any]], budget_ms: float) -> float:
    """Hypervolume of a front inside the budget, normalised to [0, 1].

    The area under the staircase "best accuracy among points with latency <= l" for l from 0 to
    the budget, divided by the budget: the mean best accuracy over latencies up to the budget.

    Args:
        front: Candidates (their ``metrics`` are read) or plain metrics dicts, each with
            ``accuracy`` and ``latency_ms``; the order does not matter and dominated points
            change nothing.
        budget_ms: The latency budget; a budget <= 0 scores 0.
    """
    if budget_ms <= 0:
        return 0.0
    metrics = [p["metrics"] if "metrics" in p else p for p in front]
    points = sorted((float(m["latency_ms"]), float(m["accuracy"])) for m in metrics if m["latency_ms"] <= budget_ms)
    area, best = 0.0, 0.0
    for i, (latency, accuracy) in enumerate(points):
        best = max(best, accuracy)
        upper = points[i + 1][0] if i + 1 < len(points) else budget_ms
        area += (upper - latency) * best
    return area / budget_ms
