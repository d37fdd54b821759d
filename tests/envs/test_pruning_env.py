"""PruningEnv: API conformance, observations, actions, episode end, candidates, errors."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from prunepilot.envs import OBSERVATION_FEATURES, PruningEnv
from prunepilot.envs.testing import proxy_evaluate, roofline_latency
from prunepilot.errors import ConfigError
from prunepilot.pruning import PruningPolicy, PruningSpace

# The action space is the keep ratio itself, Box(lower_bound, 1); both checkers recommend a
# symmetric [-1, 1] box (a recommendation, documented in PruningEnv), and gymnasium cannot
# test render modes of an env without a registry spec. Any other warning fails the test.
_EXPECTED_WARNINGS = ("symmetric and normalized", "render modes")


def make_env(space: PruningSpace, fraction: float = 0.5, **kwargs: Any) -> PruningEnv:
    latency = roofline_latency(space)
    budget = fraction * latency(space.full_widths())
    return PruningEnv(space, proxy_evaluate(space, latency), latency, budget, **kwargs)


def run_episode(env: PruningEnv, actions: list[float]) -> tuple[list[dict[str, Any]], float]:
    env.reset(seed=0)
    infos, reward = [], 0.0
    for i, a in enumerate(actions):
        obs, reward, done, truncated, info = env.step(np.array([a], dtype=np.float32))
        assert env.observation_space.contains(obs)
        assert not truncated
        assert done == (i == len(actions) - 1)
        if not done:
            assert reward == 0.0
        infos.append(info)
    return infos, float(reward)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_gymnasium_and_sb3_check_env_pass(zoo_space: dict[str, PruningSpace], name: str) -> None:
    env = make_env(zoo_space[name])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env)
        sb3_check_env(env, warn=True)
    unexpected = [str(w.message) for w in caught if not any(e in str(w.message) for e in _EXPECTED_WARNINGS)]
    assert unexpected == []
    assert env.observation_space.shape == (len(OBSERVATION_FEATURES),)
    assert env.action_space.low[0] == pytest.approx(0.2) and env.action_space.high[0] == 1.0


def test_episode_has_one_step_per_group_and_ends_with_evaluated_policy(
    zoo_space: dict[str, PruningSpace],
) -> None:
    space = zoo_space["resnet20"]
    seen: list[tuple[PruningPolicy, dict[str, Any]]] = []
    env = make_env(space, 0.6, on_candidate=lambda p, m: seen.append((p, m)))
    infos, reward = run_episode(env, [0.9] * len(space.groups))
    assert [i["group"] for i in infos] == list(space.names)
    final = infos[-1]
    policy = PruningPolicy.from_json(final["policy"])
    assert policy.signature == space.signature
    assert policy.channels == {i["group"]: i["width"] for i in infos}
    assert final["metrics"]["accuracy"] == pytest.approx(
        0.5 + 0.5 * np.sqrt(space.macs(policy.channels) / space.macs(space.full_widths()))
    )
    assert reward == pytest.approx(final["metrics"]["accuracy"] - 1.0)  # AMC's -error
    assert final["reward"] == reward and final["cache_hit"] is False and final["episode_index"] == 0
    assert final["predicted_latency_ms"] <= env.budget_ms
    json.dumps(final)  # info is plain data
    assert len(seen) == 1 and seen[0][0] == policy and seen[0][1]["accuracy"] == final["metrics"]["accuracy"]


def test_observation_features_are_normalised_and_track_the_episode(
    zoo_space: dict[str, PruningSpace],
) -> None:
    space = zoo_space["mobilenetv2"]
    env = make_env(space, 0.5)
    obs, _ = env.reset(seed=0)
    f = dict(zip(OBSERVATION_FEATURES, obs, strict=True))
    assert f["index"] == 0.0 and f["kind_conv"] == 1.0 and f["reduced"] == 0.0 and f["prev_action"] == 1.0
    assert 0.0 < f["rest"] <= 1.0 and 0.0 <= f["budget_open"] < 1.0
    shares = env._latency_share
    assert shares.sum() == pytest.approx(1.0) and (shares >= 0).all()
    previous_reduced = 0.0
    for t in range(len(space.groups) - 1):
        obs, *_ = env.step(np.array([0.5], dtype=np.float32))
        f = dict(zip(OBSERVATION_FEATURES, obs, strict=True))
        assert np.all((obs >= 0) & (obs <= 1)) and obs.dtype == np.float32
        assert f["index"] == pytest.approx((t + 1) / (len(space.groups) - 1))
        assert f["prev_action"] == pytest.approx(env._ratios[-1])
        assert f["reduced"] >= previous_reduced - 1e-6  # pruning only ever removes MACs
        previous_reduced = f["reduced"]
    assert previous_reduced > 0.3


def test_actions_outside_the_box_and_nan_are_clamped(zoo_space: dict[str, PruningSpace]) -> None:
    space = zoo_space["resnet20"]
    env = make_env(space, 1.0)  # no budget pressure: only the clamp acts
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([7.0], dtype=np.float32))
    assert info["requested_ratio"] == 1.0 and info["width"] == space.groups[0].channels
    _, _, _, _, info = env.step(np.array([-3.0], dtype=np.float32))
    assert info["requested_ratio"] == pytest.approx(0.2) and not info["clipped"]
    _, _, _, _, info = env.step(np.array([np.nan], dtype=np.float32))
    assert info["requested_ratio"] == pytest.approx(0.2)


def test_step_after_the_end_needs_reset(zoo_space: dict[str, PruningSpace]) -> None:
    space = zoo_space["resnet20"]
    env = make_env(space)
    run_episode(env, [1.0] * len(space.groups))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([1.0], dtype=np.float32))


def test_round_to_and_importance_reach_the_policy(zoo_space: dict[str, PruningSpace]) -> None:
    space = zoo_space["resnet20"]
    env = make_env(space, 0.5, round_to=8, importance="l2")
    infos, _ = run_episode(env, [0.55] * len(space.groups))
    policy = PruningPolicy.from_json(infos[-1]["policy"])
    assert policy.round_to == 8 and policy.importance == "l2"
    assert all(w % 8 == 0 for w in policy.channels.values())


def test_unreachable_budget_is_refused_with_the_reachable_minimum(zoo_space: dict[str, PruningSpace]) -> None:
    space = zoo_space["resnet20"]
    latency = roofline_latency(space)
    floor = latency({g.name: max(1, round(0.2 * g.channels)) for g in space.groups})
    with pytest.raises(ConfigError, match=r"reachable minimum") as exc:
        PruningEnv(space, proxy_evaluate(space, latency), latency, floor * 0.9)
    assert f"{floor:.4g} ms" in str(exc.value)
    with pytest.raises(ConfigError, match="lower_bound"):
        PruningEnv(space, proxy_evaluate(space, latency), latency, floor * 2, lower_bound=0.0)
    with pytest.raises(ConfigError, match="budget_ms"):
        PruningEnv(space, proxy_evaluate(space, latency), latency, -1.0)


def test_unknown_reward_lists_valid_rewards(zoo_space: dict[str, PruningSpace]) -> None:
    with pytest.raises(ConfigError, match=r"unknown reward 'accuracy'.*'acc_log_latency', 'lagrangian' or 'mnas'"):
        make_env(zoo_space["resnet20"], reward="accuracy")
    with pytest.raises(ConfigError, match=r"reward 'mnas' has no setting 'alpha'; its settings are 'w'"):
        make_env(zoo_space["resnet20"], reward="mnas", reward_kwargs={"alpha": -0.1})


def test_named_reward_and_its_settings_are_used(zoo_space: dict[str, PruningSpace]) -> None:
    space = zoo_space["resnet20"]
    env = make_env(space, 0.5, reward="mnas", reward_kwargs={"w": -0.5})
    infos, reward = run_episode(env, [1.0] * len(space.groups))
    m = infos[-1]["metrics"]
    assert reward == pytest.approx(m["accuracy"] * (m["latency_ms"] / env.budget_ms) ** -0.5)


@dataclass(frozen=True)
class FakeMetrics:  # the shape of prunepilot.search.evaluator.Metrics, without macs
    accuracy: float
    latency_ms: float
    latency_kind: str = "predicted"


def test_dataclass_metrics_and_missing_macs_are_filled_in(zoo_space: dict[str, PruningSpace]) -> None:
    space = zoo_space["resnet20"]
    latency = roofline_latency(space)
    env = PruningEnv(
        space,
        lambda p: FakeMetrics(0.8, latency(p.channels)),
        latency,
        0.5 * latency(space.full_widths()),
        reward="acc_log_flops",
    )
    infos, reward = run_episode(env, [0.6] * len(space.groups))
    metrics = infos[-1]["metrics"]
    widths = PruningPolicy.from_json(infos[-1]["policy"]).channels
    assert metrics["latency_kind"] == "predicted" and metrics["macs"] == space.macs(widths)
    assert reward == pytest.approx(-0.2 * np.log(space.macs(widths)))
