"""Rewards by name (values from their papers' formulas) and the evaluation cache."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from prunepilot.envs import EvaluationCache, PruningEnv, RewardContext, list_rewards, make_reward, reward_params
from prunepilot.envs.testing import proxy_evaluate, roofline_latency
from prunepilot.errors import ConfigError
from prunepilot.pruning import PruningPolicy, PruningSpace

CTX = RewardContext(budget_ms=10.0, base_macs=1000)


def test_registry_lists_the_four_rewards_with_docs() -> None:
    assert list_rewards() == ["acc", "acc_log_flops", "acc_log_latency", "lagrangian", "mnas"]
    assert reward_params("mnas") == {"w": -0.07}
    assert reward_params("lagrangian") == {"lam": 1.0}
    for name in list_rewards():
        doc = make_reward(name).__doc__ or ""
        assert any(cite in doc for cite in ("He et al.", "Tan et al.")), name


def test_reward_values() -> None:
    m = {"accuracy": 0.9, "latency_ms": 5.0, "macs": 1_000_000}
    assert make_reward("acc")(m, CTX) == pytest.approx(-0.1)
    assert make_reward("acc_log_flops")(m, CTX) == pytest.approx(-0.1 * math.log(1e6))
    assert make_reward("acc_log_latency")(m, CTX) == pytest.approx(-0.1 * math.log(5000.0))  # 5 ms in us
    assert make_reward("mnas")(m, CTX) == pytest.approx(0.9 * 0.5**-0.07)
    assert make_reward("mnas", w=-0.5)(m, CTX) == pytest.approx(0.9 * 0.5**-0.5)
    # Lagrangian: no penalty within the budget, lam * relative excess above it
    assert make_reward("lagrangian")(m, CTX) == pytest.approx(0.9)
    slow = {**m, "latency_ms": 15.0}
    assert make_reward("lagrangian", lam=2.0)(slow, CTX) == pytest.approx(0.9 - 2.0 * 0.5)


def test_rewards_prefer_accuracy_and_mnas_prefers_speed() -> None:
    fast, slow = {"accuracy": 0.8, "latency_ms": 4.0, "macs": 10}, {"accuracy": 0.8, "latency_ms": 9.0, "macs": 10}
    for name in ("mnas", "acc_log_latency"):  # at equal accuracy, the faster model wins
        assert make_reward(name)(fast, CTX) > make_reward(name)(slow, CTX), name
    for name in list_rewards():
        r = make_reward(name)
        assert r({**fast, "accuracy": 0.9}, CTX) > r(fast, CTX), name


def test_unknown_reward_and_setting_errors_list_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"are 'acc', 'acc_log_flops', 'acc_log_latency', 'lagrangian' or 'mnas'"):
        make_reward("flops")
    with pytest.raises(ConfigError, match=r"'lagrangian' has no setting 'lambda'; its settings are 'lam'"):
        make_reward("lagrangian", **{"lambda": 1.0})
    with pytest.raises(ConfigError, match=r"'acc' has no setting 'w'; its settings are \(none\)"):
        make_reward("acc", w=1.0)


class CountingEvaluate:
    def __init__(self, space: PruningSpace) -> None:
        self.inner = proxy_evaluate(space, roofline_latency(space))
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, policy: PruningPolicy) -> dict[str, Any]:
        self.calls.append(policy.key())
        return self.inner(policy)


def test_a_policy_seen_before_is_not_evaluated_again(zoo_space: dict[str, PruningSpace]) -> None:
    space = zoo_space["resnet20"]
    latency = roofline_latency(space)
    evaluate = CountingEvaluate(space)
    candidates: list[PruningPolicy] = []
    env = PruningEnv(
        space, evaluate, latency, 0.6 * latency(space.full_widths()), on_candidate=lambda p, m: candidates.append(p)
    )
    n = len(space.groups)

    def episode(actions: list[float]) -> dict[str, Any]:
        env.reset()
        for a in actions:
            _, reward, done, _, info = env.step(np.array([a], dtype=np.float32))
        assert done
        return info

    first = episode([0.5] * n)
    # 0.505 and 0.5 round to the same widths on every group: same key, cached
    second = episode([0.505] * n)
    third = episode([0.7] * n)
    assert PruningPolicy.from_json(first["policy"]).key() == PruningPolicy.from_json(second["policy"]).key()
    assert len(evaluate.calls) == 2 and len(set(evaluate.calls)) == 2
    assert (first["cache_hit"], second["cache_hit"], third["cache_hit"]) == (False, True, False)
    assert second["metrics"] == first["metrics"] and second["reward"] == first["reward"]
    assert env.cache.hits == 1 and env.evaluations == 2 and env.episodes == 3
    assert len(candidates) == 2  # on_candidate reports each evaluated policy once


def test_cache_key_includes_criterion_and_can_be_shared(zoo_space: dict[str, PruningSpace]) -> None:
    space = zoo_space["resnet20"]
    cache = EvaluationCache()
    l1 = PruningPolicy.uniform(space, 0.5, importance="l1")
    l2 = PruningPolicy.uniform(space, 0.5, importance="l2")
    cache.put(l1, {"accuracy": 0.5})
    assert cache.get(l2) is None and cache.get(l1) == {"accuracy": 0.5}
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)
    stored = cache.get(l1)
    assert stored is not None
    stored["accuracy"] = 0.0  # callers get copies
    assert cache.get(l1) == {"accuracy": 0.5}
    assert l1 in cache and l2 not in cache
