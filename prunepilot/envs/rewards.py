"""Episode rewards of the pruning environment, chosen by name.

Every reward maps one evaluated candidate (its metrics) and the episode's context (latency
target, base model) to a float the agent maximises. Accuracy is a fraction in [0, 1].

Example:
    >>> reward = make_reward("mnas", w=-0.07)
    >>> round(reward({"accuracy": 0.9, "latency_ms": 5.0}, RewardContext(budget_ms=5.0)), 3)
    0.9
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prunepilot.errors import ConfigError, one_of


@dataclass(frozen=True)
class RewardContext:
    """What a reward may need besides the candidate's metrics.

    Attributes:
        budget_ms: The episode's latency target in milliseconds.
        base_macs: MACs of the unpruned model (for FLOPs-aware rewards).
    """

    budget_ms: float
    base_macs: int = 1


class RewardFn(Protocol):
    """A configured reward: ``reward(metrics, context) -> float``."""

    def __call__(self, metrics: Mapping[str, Any], context: RewardContext) -> float: ...


_REWARDS: dict[str, Callable[..., float]] = {}


def register_reward(name: str) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Register ``fn(metrics, context, *, **params) -> float`` under ``name`` (decorator).

    Keyword-only parameters of ``fn`` are the reward's settings (``reward_kwargs``).
    """

    def decorator(fn: Callable[..., float]) -> Callable[..., float]:
        if name in _REWARDS:
            raise ConfigError(f"reward {name!r} is already registered")
        _REWARDS[name] = fn
        return fn

    return decorator


def list_rewards() -> list[str]:
    """Names of the registered rewards, sorted."""
    return sorted(_REWARDS)


def reward_params(name: str) -> dict[str, Any]:
    """The settings of reward ``name`` with their defaults."""
    fn = _lookup(name)
    return {
        p.name: p.default for p in inspect.signature(fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def make_reward(name: str, **kwargs: Any) -> RewardFn:
    """The reward ``name`` with its settings bound.

    Raises:
        ConfigError: unknown reward name or setting (the message lists the valid ones).
    """
    fn = _lookup(name)
    params = reward_params(name)
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(
            f"reward {name!r} has no setting {', '.join(map(repr, unknown))}; "
            f"its settings are {one_of(params) if params else '(none)'}"
        )

    def reward(metrics: Mapping[str, Any], context: RewardContext) -> float:
        return float(fn(metrics, context, **kwargs))

    reward.__name__ = f"{name}_reward"
    reward.__doc__ = fn.__doc__
    return reward


def _lookup(name: str) -> Callable[..., float]:
    try:
        return _REWARDS[name]
    except KeyError:
        raise ConfigError(f"unknown reward {name!r}; valid rewards are {one_of(list_rewards())}") from None


@register_reward("acc")
def accuracy_reward(metrics: Mapping[str, Any], context: RewardContext) -> float:
    """AMC's accuracy-guaranteed reward ``R_err = -error`` (He et al., ECCV 2018, eq. 3).

    With the latency budget enforced by action clipping, maximising accuracy alone is AMC's
    resource-constrained compression. Returns ``accuracy - 1`` (in [-1, 0]).
    """
    return float(metrics["accuracy"]) - 1.0


@register_reward("acc_log_flops")
def accuracy_log_flops_reward(metrics: Mapping[str, Any], context: RewardContext) -> float:
    """AMC's ``R_FLOPs = -error * log(FLOPs)`` (He et al., ECCV 2018, section 3.4).

    Rewards accuracy and, weakly, fewer operations. FLOPs are counted as MACs, as AMC's
    code does; uses ``metrics["macs"]``.
    """
    error = 1.0 - float(metrics["accuracy"])
    return -error * math.log(max(2.0, float(metrics["macs"])))


@register_reward("acc_log_latency")
def accuracy_log_latency_reward(metrics: Mapping[str, Any], context: RewardContext) -> float:
    """AMC's ``R_FLOPs`` with latency for FLOPs: ``-error * log(latency)`` (He et al., ECCV 2018, section 3.4).

    Latency is taken in microseconds (at least 2), so the logarithm stays positive for models
    under a millisecond and the reward keeps AMC's shape: at equal error the faster model scores
    higher, and accuracy dominates. Uses ``metrics["latency_ms"]``.
    """
    error = 1.0 - float(metrics["accuracy"])
    return -error * math.log(max(2.0, 1000.0 * float(metrics["latency_ms"])))


@register_reward("mnas")
def mnas_reward(metrics: Mapping[str, Any], context: RewardContext, *, w: float = -0.07) -> float:
    """MnasNet's soft latency constraint ``ACC * (LAT / T) ** w`` (Tan et al., CVPR 2019, eq. 2).

    ``T`` is the latency budget; ``w = -0.07`` is the paper's choice (alpha = beta), so a 2x
    faster model is worth about 5% relative accuracy.
    """
    ratio = max(float(metrics["latency_ms"]), 1e-12) / context.budget_ms
    return float(metrics["accuracy"]) * ratio**w


@register_reward("lagrangian")
def lagrangian_reward(metrics: Mapping[str, Any], context: RewardContext, *, lam: float = 1.0) -> float:
    """Lagrangian (penalty) form of the constrained problem ``max ACC s.t. LAT <= T``:
    ``ACC - lam * max(0, LAT / T - 1)`` (as in constrained-policy RL, Tessler et al., ICLR 2019,
    and the hard-constraint variant discussed by MnasNet, Tan et al., CVPR 2019).

    ``lam`` is the multiplier (fixed here); it only acts when the evaluated latency (measured,
    for example) exceeds the budget the environment enforced with its latency predictor.
    """
    excess = max(0.0, float(metrics["latency_ms"]) / context.budget_ms - 1.0)
    return float(metrics["accuracy"]) - lam * excess
