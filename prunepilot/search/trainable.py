"""One trial, as both backends run it: the trial body, and the Ray Tune trainable around it.

A trial gets the search setup as JSON (config, budget, latency fit, in-loop latency predictor),
the base model's weights
(through Ray's object store on the Ray backend; the driver's own evaluator on the local one)
and, on resume, the run's already-stored candidates. :func:`run_trial` builds the strategy's
:class:`TrialContext` from this process's evaluator, runs ``Strategy.run_trial`` and turns each
reported ``(policy, metrics, extra)`` into a :class:`Candidate` handed to ``emit``. On Ray,
:func:`search_trial` emits one ``tune.report`` whose ``candidate`` field is the record's JSON,
which a driver callback appends to the run folder. Nothing but configs, policies, JSON records
and plain tensors crosses process boundaries.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunepilot.pruning import PruningPolicy
from prunepilot.search.config import SearchConfig
from prunepilot.search.evaluator import Evaluator, LatencyFit, Metrics, config_key, get_evaluator
from prunepilot.search.records import Candidate
from prunepilot.search.strategies import ReportFn, Strategy, TrialContext


@dataclass(frozen=True)
class SearchSetup:
    """What the driver resolved before any trial started; shipped to trials as JSON.

    ``budget_ms`` is the search's budget (every candidate is judged on it); ``trial_budget_ms``
    the one strategies aim at (less the margin, :func:`prunepilot.search.inloop.trial_budget`;
    None: the budget). ``predictor`` is the in-loop latency predictor of a measured device
    (:meth:`InLoopPredictor.to_json <prunepilot.search.inloop.InLoopPredictor.to_json>`), set in
    each trial's evaluator so that no trial profiles or calibrates; ``devices`` the same for the
    measuring devices of ``device.also``, with the budget proposals aim at on each device
    (:meth:`DeviceFigures.to_json <prunepilot.search.devices.DeviceFigures.to_json>`; None: none).
    """

    config: dict[str, Any]
    budget_ms: float
    fit: dict[str, float] | None
    run_id: str
    base_latency_ms: float
    predictor: dict[str, Any] | None = None
    trial_budget_ms: float | None = None
    devices: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> SearchSetup:
        return cls(**json.loads(text))


def trial_metrics(candidate: Candidate) -> dict[str, float]:
    """The figures a trial reports beside each candidate: what samplers optimise and Tune shows.

    ``score`` is the accuracy within the budget and is pushed down by the relative overshoot
    outside it, so a single-objective sampler learns the budget.
    """
    m, budget = candidate.metrics, float(candidate.budget_ms or 0.0)
    within = budget <= 0 or m.latency_ms <= budget
    score = m.accuracy if within else m.accuracy - (m.latency_ms / budget - 1.0)
    return {"accuracy": m.accuracy, "latency_ms": m.latency_ms, "score": score, "within_budget": int(within)}


def trial_context(
    ev: Evaluator,
    *,
    budget_ms: float,
    seed: int,
    trial_id: str,
    report: ReportFn,
    evaluations: int | None = None,
    base_latency_ms: float | None = None,
) -> TrialContext:
    """What a strategy is given in one trial, from this process's evaluator and its config.

    Both backends build every trial's context here. For a strategy run by hand on an evaluator
    (a benchmark timing one trial), ``evaluations`` defaults to the config's and
    ``base_latency_ms`` to the evaluator's base model.
    """
    cfg = ev.cfg
    return TrialContext(
        evaluator=ev,
        report=report,
        space=ev.space,
        base_model=ev.model,
        example=ev.example,
        budget_ms=budget_ms,
        base_latency_ms=ev.base_metrics().latency_ms if base_latency_ms is None else base_latency_ms,
        lower_bound=cfg.evaluation.lower_bound,
        round_to=cfg.evaluation.round_to,
        importance=cfg.evaluation.importance,
        evaluations=cfg.strategy.evaluations if evaluations is None else evaluations,
        seed=seed,
        trial_id=trial_id,
        calib_batches=ev.calib,
        val_batches=ev.val,
        train_loader=ev.data.train,
        work_dir=Path(cfg.model.cache_dir),
        evaluator_key=config_key(cfg),
        targets=ev.devices.targets(ev.space),  # device.also's budgets (empty without)
    )


def run_trial(
    strategy: Strategy,
    ev: Evaluator,
    cfg: SearchConfig,
    setup: SearchSetup,
    params: Mapping[str, Any],
    trial_id: str,
    emit: Callable[[Candidate], None],
) -> None:
    """Run one trial of ``strategy`` with ``params``; ``emit`` gets every candidate it reports."""
    seed = cfg.seed + int(params.get("trial_index", 0))
    counter = itertools.count()

    def report(policy: PruningPolicy, metrics: Metrics, extra: Mapping[str, Any]) -> None:
        emit(
            Candidate.new(
                trial=trial_id,
                index=next(counter),
                strategy=cfg.strategy.name,
                seed=seed,
                policy=policy,
                metrics=metrics,
                budget_ms=setup.budget_ms,
                extra=extra,
                cached=ev.last_cached,
            )
        )

    ctx = trial_context(
        ev,
        budget_ms=setup.budget_ms if setup.trial_budget_ms is None else setup.trial_budget_ms,
        seed=seed,
        trial_id=trial_id,
        report=report,
        evaluations=cfg.strategy.evaluations,  # not ev.cfg's: one evaluator serves configs of any strategy
        base_latency_ms=setup.base_latency_ms,
    )
    strategy.run_trial(ctx, params)


def anchor_ms(cfg: SearchConfig, ev: Evaluator, base_latency_ms: float) -> float | None:
    """The base latency in-loop candidates are timed against (``in_loop_latency: anchored`` on a
    measured device), else None."""
    anchored = cfg.evaluation.in_loop_latency == "anchored" and ev.latency.requires_model
    return float(base_latency_ms) if anchored else None


def trial_evaluator(setup: SearchSetup, base_state: Mapping[str, torch.Tensor] | None = None) -> Evaluator:
    """This process's evaluator for a trial of ``setup``: the driver's latency fit and in-loop
    predictors (of the other devices too) set from the setup (a trial never measures uniform
    points or profiles a table)."""
    from prunepilot.search.inloop import InLoopPredictor

    cfg = SearchConfig.model_validate(setup.config)
    ev = get_evaluator(cfg, base_state, LatencyFit(**setup.fit) if setup.fit else None)
    ev.in_loop = InLoopPredictor.from_json(setup.predictor) if setup.predictor is not None else None
    ev.anchor_ms = anchor_ms(cfg, ev, setup.base_latency_ms)
    ev.devices.restore(setup.devices)
    return ev


def search_trial(
    config: dict[str, Any],
    setup: str,
    base_state: Mapping[str, torch.Tensor] | None = None,
    prior: list[dict[str, Any]] | None = None,
) -> None:
    """The Tune function trainable shared by all strategies (Ray backend)."""
    from ray import tune

    from prunepilot.search.strategies import get_strategy

    s = SearchSetup.from_json(setup)
    cfg = SearchConfig.model_validate(s.config)
    torch.set_num_threads(cfg.ray.torch_threads)
    ev = trial_evaluator(s, base_state)
    seeded_key = f"_seeded_{s.run_id}"
    if prior and not getattr(ev, seeded_key, False):
        ev.seed_cache([Candidate.from_json(rec) for rec in prior])
        setattr(ev, seeded_key, True)
    trial_id = tune.get_context().get_trial_id() or "local"

    def emit(candidate: Candidate) -> None:
        tune.report({"candidate": json.dumps(candidate.to_json()), **trial_metrics(candidate)})

    run_trial(get_strategy(cfg.strategy.name, cfg.strategy.settings), ev, cfg, s, config, trial_id, emit)
