"""Cheap, deterministic evaluators and environments for prunepilot's own tests and examples.

* :func:`roofline_latency`: a latency function over widths that is monotone but not additive
  over groups (each layer costs the larger of its compute and memory time), so budget
  clipping is exercised the way real latency models exercise it.
* :func:`proxy_evaluate`: an instant ``evaluate`` (accuracy a smooth function of MACs).
* :func:`make_known_answer_env`: the environment over
  :func:`prunepilot.models.testing.make_known_answer_task`, with a *real* evaluate (prune,
  recalibrate BN, accuracy on the task's validation images), where the right answer is known.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prunepilot.envs.budget import LatencyFn
from prunepilot.envs.pruning_env import PruningEnv
from prunepilot.pruning import PruningPolicy, PruningSpace, prune_and_recalibrate
from prunepilot.training import evaluate_accuracy


def roofline_latency(
    space: PruningSpace,
    macs_per_ms: float = 2e6,
    bytes_per_ms: float = 2e6,
    overhead_ms: float = 0.002,
) -> LatencyFn:
    """``sum over layers of max(MACs / peak, bytes / bandwidth) + overhead`` at given widths."""

    def latency_ms(widths: Mapping[str, int]) -> float:
        return sum(
            max(layer.macs / macs_per_ms, layer.bytes / bytes_per_ms) + overhead_ms for layer in space.layers(widths)
        )

    return latency_ms


def proxy_evaluate(space: PruningSpace, latency_ms: LatencyFn) -> Callable[[PruningPolicy], dict[str, Any]]:
    """An instant evaluate: ``accuracy = 0.5 + 0.5 * sqrt(MACs / base MACs)``, latency from ``latency_ms``."""
    base = max(1, space.macs(space.full_widths()))

    def evaluate(policy: PruningPolicy) -> dict[str, Any]:
        macs = space.macs(policy.channels, policy.removed_blocks)
        return {
            "accuracy": 0.5 + 0.5 * math.sqrt(macs / base),
            "latency_ms": float(latency_ms(policy.channels)),
            "macs": macs,
        }

    return evaluate


@dataclass(frozen=True)
class KnownAnswer:
    """The known-answer task behind :func:`make_known_answer_env`.

    Attributes:
        space: The model's pruning space.
        evaluate: The real evaluate (prune, recalibrate BN, validation accuracy).
        latency_ms: Latency proxy (proportional to MACs).
        budget_ms: The environment's budget.
        essential: Groups that carry the label (must stay whole).
        free: Groups with no effect on the output (can be pruned freely).
    """

    space: PruningSpace
    evaluate: Callable[[PruningPolicy], dict[str, Any]]
    latency_ms: LatencyFn
    budget_ms: float
    essential: frozenset[str]
    free: frozenset[str]


def make_known_answer_env(
    seed: int = 0, budget_fraction: float = 0.15, **env_kwargs: Any
) -> tuple[PruningEnv, KnownAnswer]:
    """A :class:`PruningEnv` over the known-answer model at ``budget_fraction`` of its latency.

    Latency is proportional to MACs (``1e-5`` ms per MAC). At the default 15% budget, uniform
    pruning must cut the 4-channel essential groups to 1 channel (chance accuracy), while
    keeping them whole and pruning the free groups meets the budget at ~100% accuracy.
    """
    from prunepilot.models.testing import make_known_answer_task

    model, (train_x, train_y), (val_x, val_y), essential, free = make_known_answer_task(seed)
    example = train_x[:2]
    space = PruningSpace.build(model, example)
    calib = [(train_x[i : i + 256], train_y[i : i + 256]) for i in range(0, 1024, 256)]

    def latency_ms(widths: Mapping[str, int]) -> float:
        return space.macs(widths) * 1e-5

    def evaluate(policy: PruningPolicy) -> dict[str, Any]:
        pruned = prune_and_recalibrate(model, policy, example, space=space, calib_batches=calib)
        return {"accuracy": evaluate_accuracy(pruned, [(val_x, val_y)]), "latency_ms": latency_ms(policy.channels)}

    budget = budget_fraction * latency_ms(space.full_widths())
    env = PruningEnv(space, evaluate, latency_ms, budget, **env_kwargs)
    return env, KnownAnswer(space, evaluate, latency_ms, budget, frozenset(essential), frozenset(free))
