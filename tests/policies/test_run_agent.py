"""run_agent: every agent runs exactly the configured episodes, reports each one, stays in budget."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from prunepilot.envs import PruningEnv
from prunepilot.policies import AgentConfig, EpisodeRecord, greedy_episode, list_agents, run_agent
from prunepilot.pruning import PruningPolicy


@pytest.mark.parametrize("name", list_agents())
def test_each_agent_runs_the_configured_episodes_and_reports_them(
    make_tiny_env: Callable[..., PruningEnv], name: str
) -> None:
    candidates: list[tuple[PruningPolicy, dict[str, Any]]] = []
    env = make_tiny_env(0.4, on_candidate=lambda p, m: candidates.append((p, m)))
    episodes: list[EpisodeRecord] = []
    hyperparams = {"episodes_per_rollout": 2} if name == "ppo" else {}
    cfg = AgentConfig(name=name, episodes=10, seed=1, hyperparams=hyperparams)
    result = run_agent(env, cfg, on_episode=episodes.append)

    assert [e.index for e in result.episodes] == list(range(10)) and episodes == result.episodes
    assert env.episodes == 10
    assert result.evaluations + result.cache_hits == 10 == len(candidates) + result.cache_hits
    assert sum(e.cache_hit for e in result.episodes) == result.cache_hits
    assert result.best.reward == max(e.reward for e in result.episodes)
    for e in result.episodes:
        assert e.predicted_latency_ms <= env.budget_ms
        assert env.latency_ms(e.policy.channels) <= env.budget_ms
        assert e.reward == pytest.approx(e.metrics["accuracy"] - 1.0)
    fresh = [e.policy.key() for e in result.episodes if not e.cache_hit]
    assert fresh == [p.key() for p, _ in candidates]
    summary = result.to_dict()
    assert summary["config"]["name"] == name and len(summary["episodes"]) == 10


def test_env_factory_and_seed_reproducibility(make_tiny_env: Callable[..., PruningEnv]) -> None:
    cfg = AgentConfig(name="amc-ddpg", episodes=8, warmup_episodes=3, seed=7)
    first = run_agent(lambda: make_tiny_env(0.4), cfg)
    second = run_agent(lambda: make_tiny_env(0.4), cfg)
    assert [e.policy.channels for e in first.episodes] == [e.policy.channels for e in second.episodes]
    other = run_agent(lambda: make_tiny_env(0.4), cfg.model_copy(update={"seed": 8}))
    assert [e.policy.channels for e in other.episodes] != [e.policy.channels for e in first.episodes]


def test_greedy_episode_is_deterministic_and_within_budget(make_tiny_env: Callable[..., PruningEnv]) -> None:
    env = make_tiny_env(0.4)
    result = run_agent(env, AgentConfig(name="td3", episodes=6, warmup_episodes=2, seed=0))
    assert result.model is not None
    a, b = greedy_episode(result.model, env), greedy_episode(result.model, env)
    assert a.policy.channels == b.policy.channels and b.cache_hit
    assert a.predicted_latency_ms <= env.budget_ms


def test_run_agent_leaves_no_sb3_log_folder(
    make_tiny_env: Callable[..., PruningEnv], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SB3's default logger makes an empty ``tempdir/SB3-<time>`` per learn(); ours writes nothing."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    result = run_agent(make_tiny_env(0.4), AgentConfig(name="amc-ddpg", episodes=3, warmup_episodes=2, seed=0))
    assert len(result.episodes) == 3
    assert list(tmp_path.iterdir()) == []
