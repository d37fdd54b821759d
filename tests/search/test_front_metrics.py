"""budget_hypervolume: what a user with this budget can pick from a front."""

from __future__ import annotations

import pytest

from prunepilot.search.front_metrics import budget_hypervolume


def test_budget_hypervolume_counts_only_points_within_the_budget() -> None:
    front = [
        {"latency_ms": 2.0, "accuracy": 0.5},
        {"latency_ms": 6.0, "accuracy": 0.8},
        {"latency_ms": 12.0, "accuracy": 0.9},  # over the budget: counts for nothing
    ]
    # best acc 0 on [0, 2), 0.5 on [2, 6), 0.8 on [6, 10] -> (0.5 * 4 + 0.8 * 4) / 10
    assert budget_hypervolume(front, 10.0) == pytest.approx(0.52)
    assert budget_hypervolume(front, 1.0) == 0.0
    assert budget_hypervolume([], 10.0) == 0.0
    assert budget_hypervolume(front, 0.0) == 0.0


def test_budget_hypervolume_reads_candidates_and_ignores_order_and_dominated_points() -> None:
    flat = [{"latency_ms": 6.0, "accuracy": 0.8}, {"latency_ms": 2.0, "accuracy": 0.5}]
    candidates = [{"id": str(i), "status": "ok", "metrics": m} for i, m in enumerate(flat)]
    dominated = {"metrics": {"latency_ms": 7.0, "accuracy": 0.6}}
    assert budget_hypervolume(candidates + [dominated], 10.0) == pytest.approx(budget_hypervolume(flat, 10.0))
    assert budget_hypervolume(candidates, 10.0) == pytest.approx(0.52)


def test_doctests() -> None:
    import doctest

    from prunepilot.search import front_metrics

    result = doctest.testmod(front_metrics)
    assert result.attempted > 0 and result.failed == 0
