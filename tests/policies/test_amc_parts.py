"""AMC's additions to SB3's DDPG: delayed reward, baseline, truncated decaying noise, settings."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from prunepilot.envs import PruningEnv
from prunepilot.policies import AMCDDPG, AgentConfig, EpisodeRewardBuffer, TruncatedNormalNoise, run_agent


def _buffer(size: int = 16, alpha: float = 0.5) -> EpisodeRewardBuffer:
    obs = spaces.Box(0, 1, (2,), np.float32)
    act = spaces.Box(-1, 1, (1,), np.float32)
    return EpisodeRewardBuffer(size, obs, act, device="cpu", baseline_alpha=alpha)


def _add_episode(buf: EpisodeRewardBuffer, length: int, final: float) -> None:
    for t in range(length):
        done = t == length - 1
        buf.add(
            np.zeros((1, 2)),
            np.zeros((1, 2)),
            np.zeros((1, 1)),
            np.array([final if done else 0.0]),
            np.array([done]),
            [{}],
        )


def test_every_transition_of_an_episode_gets_the_final_reward() -> None:
    buf = _buffer(size=10)
    _add_episode(buf, 3, 0.7)
    _add_episode(buf, 4, -0.2)
    assert buf.rewards[:7, 0].tolist() == pytest.approx([0.7] * 3 + [-0.2] * 4)
    _add_episode(buf, 4, 0.4)  # wraps around the ring buffer: rows 7, 8, 9, 0
    assert buf.rewards[[7, 8, 9, 0], 0].tolist() == pytest.approx([0.4] * 4)
    assert buf.rewards[1:3, 0].tolist() == pytest.approx([0.7, 0.7])  # older rows untouched


def test_sampled_rewards_are_centred_by_a_moving_average_baseline() -> None:
    buf = _buffer(size=64, alpha=0.5)
    _add_episode(buf, 8, 1.0)
    first = buf.sample(16)
    assert buf.baseline == pytest.approx(1.0)  # the first batch mean
    assert th.allclose(first.rewards, th.zeros_like(first.rewards))
    _add_episode(buf, 8, 3.0)
    batch = buf.sample(32)
    raw_mean = float((batch.rewards + buf.baseline).mean())
    assert buf.baseline == pytest.approx(1.0 + 0.5 * (raw_mean - 1.0))
    assert float(batch.rewards.mean()) == pytest.approx(raw_mean - buf.baseline, abs=1e-6)


def test_buffer_needs_one_env_and_a_valid_alpha() -> None:
    obs, act = spaces.Box(0, 1, (2,), np.float32), spaces.Box(-1, 1, (1,), np.float32)
    with pytest.raises(ValueError, match="one environment"):
        EpisodeRewardBuffer(8, obs, act, device="cpu", n_envs=2)
    with pytest.raises(ValueError, match="baseline_alpha"):
        EpisodeRewardBuffer(8, obs, act, device="cpu", baseline_alpha=0.0)


def test_noise_decays_per_episode_after_warmup_and_stays_in_bounds() -> None:
    noise = TruncatedNormalNoise(sigma=1.25, decay=0.95, warmup_episodes=3, seed=0)
    for episodes in range(4):  # up to the end of warm-up: AMC's initial sigma
        noise.episodes = episodes
        assert noise.sigma == pytest.approx(1.25)
    for k in range(1, 6):
        noise.episodes = 3 + k
        assert noise.sigma == pytest.approx(1.25 * 0.95**k)
    narrow = TruncatedNormalNoise(sigma=0.3, decay=1.0, warmup_episodes=0, seed=0)
    draws = np.array([narrow.sample_around(np.array([0.9]))[0] for _ in range(4000)])
    assert draws.min() >= -1.0 and draws.max() <= 1.0
    assert (draws == 1.0).mean() < 0.01  # truncated, not clipped: no mass piled on the bound
    # truncation moves the mean inwards, the mode stays at the actor's action
    assert draws.mean() < 0.9 - 0.05
    hist, edges = np.histogram(draws, bins=10, range=(-1, 1))
    assert edges[hist.argmax()] == pytest.approx(0.8)


def test_amc_ddpg_uses_amc_settings(make_tiny_env: Callable[..., PruningEnv]) -> None:
    env = make_tiny_env(0.5)
    result = run_agent(env, AgentConfig(name="amc-ddpg", episodes=6, warmup_episodes=2, seed=0))
    model = result.model
    assert isinstance(model, AMCDDPG)
    assert (model.tau, model.gamma, model.batch_size) == (0.01, 1.0, 64)
    assert model.learning_starts == 2 * env.steps_per_episode
    assert model.buffer_size == 100 * env.steps_per_episode
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    hidden = [m.out_features for m in model.actor.mu if isinstance(m, th.nn.Linear)]
    assert hidden == [300, 300, 1]
    assert isinstance(model.replay_buffer, EpisodeRewardBuffer) and model.replay_buffer.baseline is not None
    noise = model.action_noise
    assert isinstance(noise, TruncatedNormalNoise)
    # AMC's sigma 0.5 is in keep-ratio units; the action box [0.2, 1] maps to [-1, 1]
    assert noise.initial_sigma == pytest.approx(0.5 * 2 / 0.8)
    # the last draw was in episode index 5 (three episodes after the 2 warm-up episodes)
    assert noise.episodes == 5 and noise.sigma == pytest.approx(noise.initial_sigma * 0.95**3)
    # run_agent stops right after the 6th episode's evaluation, before SB3 stores its last step
    # every stored transition carries its episode's final reward
    stored = model.replay_buffer.rewards[: 5 * env.steps_per_episode, 0].reshape(5, -1)
    finals = [e.reward for e in result.episodes[:5]]
    assert np.allclose(stored, np.array(finals)[:, None], atol=1e-6)


def test_hyperparameters_reach_the_model(make_tiny_env: Callable[..., PruningEnv]) -> None:
    cfg = AgentConfig(
        name="amc-ddpg",
        episodes=3,
        warmup_episodes=1,
        seed=0,
        hyperparams={"tau": 0.05, "actor_lr": 3e-4, "noise_sigma": 0.2, "policy_kwargs": {"net_arch": [32]}},
    )
    model = run_agent(make_tiny_env(0.5), cfg).model
    assert isinstance(model, AMCDDPG)
    assert model.tau == 0.05 and model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)
    assert [m.out_features for m in model.actor.mu if isinstance(m, th.nn.Linear)] == [32, 1]
    assert model.action_noise.initial_sigma == pytest.approx(0.2 * 2 / 0.8)  # type: ignore[union-attr]
