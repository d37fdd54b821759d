"""The pruning environment (AMC-style), its rewards, budget clipping and evaluation cache.

Public API::

    env = PruningEnv(space, evaluator.evaluate, evaluator.predict_latency_ms, budget_ms=2.0,
                     reward="mnas", reward_kwargs={"w": -0.07})
    obs, _ = env.reset(seed=0)
    obs, reward, done, _, info = env.step(np.array([0.5], dtype=np.float32))
    uniform = uniform_within_budget(space, evaluator.predict_latency_ms, 2.0)   # the baseline
"""

from __future__ import annotations

from prunepilot.envs.budget import LatencyBudget, LatencyFn, allowed_widths, uniform_within_budget
from prunepilot.envs.cache import EvaluationCache
from prunepilot.envs.pruning_env import OBSERVATION_FEATURES, PruningEnv, metrics_dict
from prunepilot.envs.rewards import (
    RewardContext,
    RewardFn,
    list_rewards,
    make_reward,
    register_reward,
    reward_params,
)

__all__ = [
    "OBSERVATION_FEATURES",
    "EvaluationCache",
    "LatencyBudget",
    "LatencyFn",
    "PruningEnv",
    "RewardContext",
    "RewardFn",
    "allowed_widths",
    "list_rewards",
    "make_reward",
    "metrics_dict",
    "register_reward",
    "reward_params",
    "uniform_within_budget",
]
