"""The product's searches run in this process for the benchmarks: every strategy run here is a
``prunepilot.search.run(config, backend="local")`` -- the same config -> driver -> trials -> run
store path a user's ``prunepilot search`` takes, serially, without Ray. ``bench/amc.py`` and
``bench/oneshot.py`` search only through these functions; none of them wires a trial by hand.

Each search runs on the benchmark's own config (``ev.cfg``) with the strategy, its settings, the
seed and the budget (in ms) replaced, no uniform baseline (the benchmarks draw their own), in a
temporary run folder unless one is given. The driver measures the base model and the latency fit
as every search does; the evaluator is this process's cached one for that config
(:func:`~prunepilot.search.evaluator.get_evaluator`), so a benchmark's runs share its model, data
and evaluation cache.

A candidate comes back as a :data:`Record`; the pick within a budget is the product's
(:func:`~prunepilot.search.pareto.best_within_budget`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prunepilot.pruning import PruningPolicy
from prunepilot.search.evaluator import Evaluator, Metrics
from prunepilot.search.pareto import best_within_budget
from prunepilot.search.records import Candidate

Record = tuple[PruningPolicy, Metrics, dict[str, Any]]
"""One candidate a strategy reported: its policy, its metrics and its extra fields (``cached`` among them)."""

#: The evaluation cap of a search limited by time only (``strategy.time_limit_s`` ends it first).
UNBOUNDED = 1_000_000


def record(cand: Candidate) -> Record:
    """A stored candidate as a :data:`Record`."""
    return cand.policy, cand.metrics, {**cand.extra, "cached": cand.cached}


def search(
    ev: Evaluator,
    name: str,
    settings: Mapping[str, Any],
    budget_ms: float,
    seed: int,
    *,
    evaluations: int = 1,
    time_limit_s: float | None = None,
    run_dir: Path | None = None,
) -> list[Record]:
    """``prunepilot.search.run(..., backend="local")`` of strategy ``name`` on ``ev``'s config at
    ``budget_ms``: every candidate its trials reported, in order. The driver's budget fill
    (``evaluation.fill_below``) and its uniform candidate at the budget
    (``evaluation.uniform_at_budget``) are off: these benchmarks compare what strategies propose at
    equal evaluations, with uniform pruning as its own row (``bench/budget_use.py`` and
    ``bench/user_net.py`` run the product's search with both)."""
    import prunepilot.search

    cfg = ev.cfg.model_dump(mode="json")
    cfg.update(
        seed=seed,
        budget={"ms": budget_ms},
        strategy={"name": name, "evaluations": evaluations, "settings": dict(settings), "time_limit_s": time_limit_s},
        run_dir=None,
    )
    cfg["evaluation"] = {**cfg["evaluation"], "uniform_baseline": 0, "fill_below": 0.0, "uniform_at_budget": False}
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        folder = run_dir if run_dir is not None else Path(tmp) / "run"
        result = prunepilot.search.run(cfg, backend="local", run_dir=folder, progress=False)
    return [record(c) for c in result.candidates]


def run_strategy(
    ev: Evaluator, name: str, settings: Mapping[str, Any], budget_ms: float, seed: int, evaluations: int = 1
) -> list[Record]:
    """A search with strategy ``name`` (an agent or a one-shot method): every candidate it
    reported, in order. ``evaluations`` is the strategy's evaluation budget (episodes, for an agent)."""
    return search(ev, name, settings, budget_ms, seed, evaluations=evaluations)


def random_search(
    ev: Evaluator, budget_ms: float, seed: int, *, evaluations: int | None = None, seconds: float | None = None
) -> list[Record]:
    """A ``random`` search (keep ratios uniform in ``[lower_bound, 1]`` per group, projected into
    the budget): ``evaluations`` candidates, or as many as ``seconds`` allow
    (``strategy.time_limit_s``; the search's set-up is inside the limit, as a user's would be)."""
    if (evaluations is None) == (seconds is None):
        raise ValueError("random_search needs exactly one of evaluations and seconds")
    if evaluations is not None:
        return search(ev, "random", {}, budget_ms, seed, evaluations=evaluations)
    return search(ev, "random", {}, budget_ms, seed, evaluations=UNBOUNDED, time_limit_s=seconds)


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
