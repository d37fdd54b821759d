"""The product's search strategies run in this process, one trial at a time, on one
:class:`~prunepilot.search.evaluator.Evaluator`, without Ray: the only place in ``bench/`` that
runs a strategy's trial by hand (with the product's own
:func:`~prunepilot.search.trainable.trial_context`). ``bench/amc.py`` and ``bench/oneshot.py``
search only through these functions.

A candidate comes back as a :data:`Record`; the pick within a budget is the product's
(:func:`~prunepilot.search.pareto.best_within_budget`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from prunepilot.pruning import PruningPolicy
from prunepilot.search.evaluator import Evaluator, Metrics
from prunepilot.search.pareto import best_within_budget
from prunepilot.search.strategies import TrialContext
from prunepilot.search.trainable import trial_context

Record = tuple[PruningPolicy, Metrics, dict[str, Any]]
"""One candidate a strategy reported: its policy, its metrics and the strategy's extra fields."""


def _context(
    ev: Evaluator, name: str, budget_ms: float, seed: int, evaluations: int, records: list[Record]
) -> TrialContext:
    """The product's trial context on ``ev`` (as both search backends build it), reporting into ``records``."""
    return trial_context(
        ev,
        budget_ms=budget_ms,
        seed=seed,
        trial_id=name,
        report=lambda p, m, e: records.append((p, m, dict(e))),
        evaluations=evaluations,
    )


def run_strategy(
    ev: Evaluator, name: str, settings: Mapping[str, Any], budget_ms: float, seed: int, evaluations: int = 1
) -> list[Record]:
    """One trial of session strategy ``name`` (an agent or a one-shot method) on ``ev``: every
    candidate it reported, in order. ``evaluations`` is the strategy's evaluation budget
    (episodes, for an agent)."""
    from prunepilot.search.strategies import get_strategy  # imports Ray: only when a strategy runs

    records: list[Record] = []
    ctx = _context(ev, name, budget_ms, seed, evaluations, records)
    get_strategy(name, settings).run_trial(ctx, {"trial_index": 0})
    return records


def random_search(
    ev: Evaluator, budget_ms: float, seed: int, *, evaluations: int | None = None, seconds: float | None = None
) -> list[Record]:
    """The ``random`` strategy's trials (keep ratios uniform in ``[lower_bound, 1]`` per group, as
    its Tune space draws them, projected into the budget), ``evaluations`` of them or as many as
    ``seconds`` allow."""
    from prunepilot.search.strategies.sampling import evaluate_ratios  # imports Ray: only when it runs

    if (evaluations is None) == (seconds is None):
        raise ValueError("random_search needs exactly one of evaluations and seconds")
    records: list[Record] = []
    ctx = _context(ev, "random", budget_ms, seed, 1, records)
    rng = np.random.default_rng(seed)
    lower = ev.cfg.evaluation.lower_bound
    start = time.perf_counter()

    def more() -> bool:
        if evaluations is not None:
            return len(records) < evaluations
        return time.perf_counter() - start < float(seconds or 0.0)

    while more():
        ratios = {g.name: float(rng.uniform(lower, 1.0)) for g in ev.space.groups}
        evaluate_ratios(ctx, ratios, project=True)
    return records


def uniform_record(ev: Evaluator, budget_ms: float) -> Record:
    """The uniform baseline: the widest uniform policy within the budget (by the evaluator's fast
    predictor), evaluated."""
    from prunepilot.envs import uniform_within_budget

    e = ev.cfg.evaluation
    policy = uniform_within_budget(
        ev.space,
        ev.predict_latency_ms,
        budget_ms,
        lower_bound=e.lower_bound,
        round_to=e.round_to,
        importance=e.importance,
    )
    return policy, ev.evaluate(policy), {}


def best_record(records: list[Record], budget_ms: float) -> Record | None:
    """The most accurate record within the budget (ties: the faster), as the product picks one."""
    candidates: list[dict[str, Any]] = [
        {"status": "ok", "metrics": m.to_dict(), "index": i} for i, (_p, m, _e) in enumerate(records)
    ]
    best = best_within_budget(candidates, budget_ms * (1 + 1e-9))
    return records[best["index"]] if best is not None else None
