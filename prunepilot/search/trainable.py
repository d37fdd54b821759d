"""The Ray Tune trainable: one function for every strategy, run inside Tune's workers.

A trial gets the search setup as JSON (config, budget, latency fit), the base model's weights
through Ray's object store (``tune.with_parameters``), and the run's already-stored
candidates on resume. It builds (or reuses) this process's evaluator, asks the strategy to do
its work, and reports each candidate as one ``tune.report`` whose ``candidate`` field is the
JSON record the driver appends to the run folder. Nothing but configs, policies and plain
tensors crosses process boundaries.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from prunepilot import __version__
from prunepilot.pruning import TORCH_PRUNING_VERSION, PruningPolicy
from prunepilot.search.config import SearchConfig
from prunepilot.search.evaluator import LatencyFit, Metrics, get_evaluator
from prunepilot.search.strategies import TrialContext, get_strategy

#: Versions recorded with every candidate.
VERSIONS = {
    "prunepilot": __version__,
    "torch": str(torch.__version__),
    "torch_pruning": TORCH_PRUNING_VERSION,
    "python": platform.python_version(),
}


@dataclass(frozen=True)
class SearchSetup:
    """What the driver resolved before any trial started; shipped to trials as JSON."""

    config: dict[str, Any]
    budget_ms: float
    fit: dict[str, float] | None
    run_id: str
    base_latency_ms: float

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> SearchSetup:
        return cls(**json.loads(text))


def candidate_record(
    *,
    trial_id: str,
    index: int,
    strategy: str,
    seed: int,
    policy: PruningPolicy,
    metrics: Metrics,
    budget_ms: float,
    extra: Mapping[str, Any],
    cached: bool,
) -> dict[str, Any]:
    """The JSON record of one evaluated candidate (one line of ``candidates.jsonl``)."""
    m = metrics.to_dict()
    m["within_budget"] = bool(metrics.latency_ms <= budget_ms)
    return {
        "id": f"{trial_id}-{index:04d}",
        "status": "ok",
        "strategy": strategy,
        "trial": trial_id,
        "index": index,
        "seed": seed,
        "budget_ms": budget_ms,
        "policy": policy.model_dump(mode="json"),
        "metrics": m,
        "cached": cached,
        "node": socket.gethostname(),
        "node_id": _node_id(),
        "pid": os.getpid(),
        "wall_time": time.time(),
        "versions": VERSIONS,
        **{k: v for k, v in extra.items() if k not in ("id", "status", "policy", "metrics")},
    }


def _node_id() -> str | None:
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - outside Ray there is no node
        return None


def search_trial(
    config: dict[str, Any],
    setup: str,
    base_state: Mapping[str, torch.Tensor] | None = None,
    prior: list[dict[str, Any]] | None = None,
) -> None:
    """The Tune function trainable shared by all strategies."""
    from ray import tune

    s = SearchSetup.from_json(setup)
    cfg = SearchConfig.model_validate(s.config)
    torch.set_num_threads(cfg.ray.torch_threads)
    ev = get_evaluator(cfg, base_state, LatencyFit(**s.fit) if s.fit else None)
    seeded_key = f"_seeded_{s.run_id}"
    if prior and not getattr(ev, seeded_key, False):
        ev.seed_cache(prior)
        setattr(ev, seeded_key, True)
    trial_id = tune.get_context().get_trial_id() or "local"
    strategy = get_strategy(cfg.strategy.name, cfg.strategy.settings)
    index = int(config.get("trial_index", 0))
    seed = cfg.seed + index
    counter = itertools.count()

    def report(policy: PruningPolicy, metrics: Metrics, extra: Mapping[str, Any]) -> None:
        rec = candidate_record(
            trial_id=trial_id,
            index=next(counter),
            strategy=cfg.strategy.name,
            seed=seed,
            policy=policy,
            metrics=metrics,
            budget_ms=s.budget_ms,
            extra=extra,
            cached=ev.last_cached,
        )
        within = metrics.latency_ms <= s.budget_ms
        score = metrics.accuracy if within else metrics.accuracy - (metrics.latency_ms / s.budget_ms - 1.0)
        tune.report(
            {
                "candidate": json.dumps(rec),
                "accuracy": metrics.accuracy,
                "latency_ms": metrics.latency_ms,
                "score": score,
                "within_budget": int(within),
            }
        )

    ctx = TrialContext(
        evaluator=ev,
        budget_ms=s.budget_ms,
        lower_bound=cfg.evaluation.lower_bound,
        evaluations=cfg.strategy.evaluations,
        seed=seed,
        trial_id=trial_id,
        report=report,
        extra={"base_latency_ms": s.base_latency_ms},
    )
    strategy.run_trial(ctx, config)
