"""Reinforcement-learning agents that search pruning policies on :class:`~prunepilot.envs.PruningEnv`.

Public API::

    from prunepilot.policies import AgentConfig, run_agent
    result = run_agent(env, AgentConfig(name="amc-ddpg", episodes=200, seed=0))
    result.best.policy, result.best.metrics["accuracy"]

Agents (``list_agents()``): ``amc-ddpg`` (AMC's DDPG, He et al. ECCV 2018), ``ppo``, ``sac``, ``td3``.
"""

from __future__ import annotations

from prunepilot.policies.agents import AgentSpec, get_agent, list_agents, register_agent
from prunepilot.policies.amc import AMCDDPG, EpisodeRewardBuffer, TruncatedNormalNoise
from prunepilot.policies.config import AgentConfig
from prunepilot.policies.run import AgentResult, EpisodeRecord, EpisodeRecorder, greedy_episode, run_agent

__all__ = [
    "AMCDDPG",
    "AgentConfig",
    "AgentResult",
    "AgentSpec",
    "EpisodeRecord",
    "EpisodeRecorder",
    "EpisodeRewardBuffer",
    "TruncatedNormalNoise",
    "get_agent",
    "greedy_episode",
    "list_agents",
    "register_agent",
    "run_agent",
]
