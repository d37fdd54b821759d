"""Run one agent on a pruning environment and collect every episode's candidate.

Standalone from Python, or inside one Ray Tune trial of the search layer, which passes
``on_episode`` to report each episode as it finishes::

    result = run_agent(lambda: PruningEnv(...), AgentConfig(name="amc-ddpg", episodes=200, seed=0),
                       on_episode=lambda rec: tune.report(rec.to_dict()))
    result.best.policy.save("policy.json")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger

from prunepilot.envs import PruningEnv
from prunepilot.policies.agents import get_agent
from prunepilot.policies.config import AgentConfig
from prunepilot.pruning import PruningPolicy

EnvSource = PruningEnv | Callable[[], PruningEnv]


@dataclass(frozen=True)
class EpisodeRecord:
    """One finished episode: the policy it decided and how it scored.

    Attributes:
        index: Episode number in the run, from 0.
        policy: The decided policy (within the latency budget by construction).
        metrics: The evaluation's metrics (``accuracy``, ``latency_ms``, ``macs``...).
        reward: The environment's reward for it.
        cache_hit: True when the metrics came from the evaluation cache.
        predicted_latency_ms: The environment's latency estimate used for budget clipping.
        budget_ms: The latency budget of the run.
    """

    index: int
    policy: PruningPolicy
    metrics: dict[str, Any]
    reward: float
    cache_hit: bool
    predicted_latency_ms: float
    budget_ms: float

    @classmethod
    def from_info(cls, index: int, info: dict[str, Any]) -> EpisodeRecord:
        """From the ``info`` of an episode's last step."""
        return cls(
            index=index,
            policy=PruningPolicy.from_json(info["policy"]),
            metrics=dict(info["metrics"]),
            reward=float(info["reward"]),
            cache_hit=bool(info["cache_hit"]),
            predicted_latency_ms=float(info["predicted_latency_ms"]),
            budget_ms=float(info["budget_ms"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (policy as a dict)."""
        return {
            "index": self.index,
            "policy": self.policy.model_dump(mode="json"),
            "metrics": dict(self.metrics),
            "reward": self.reward,
            "cache_hit": self.cache_hit,
            "predicted_latency_ms": self.predicted_latency_ms,
            "budget_ms": self.budget_ms,
        }


@dataclass
class AgentResult:
    """The outcome of :func:`run_agent`.

    Attributes:
        config: The agent configuration that ran.
        episodes: Every episode in order.
        best: The episode with the highest reward (the first, on ties).
        evaluations: Policies actually evaluated (episodes minus cache hits).
        cache_hits: Episodes answered by the evaluation cache.
        seconds: Wall time of the run.
        model: The trained SB3 algorithm (not serialisable; for greedy rollouts and saving).
    """

    config: AgentConfig
    episodes: list[EpisodeRecord]
    best: EpisodeRecord
    evaluations: int
    cache_hits: int
    seconds: float
    model: BaseAlgorithm | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the model)."""
        return {
            "config": self.config.model_dump(mode="json"),
            "best": self.best.to_dict(),
            "episodes": [e.to_dict() for e in self.episodes],
            "evaluations": self.evaluations,
            "cache_hits": self.cache_hits,
            "seconds": self.seconds,
        }


class EpisodeRecorder(BaseCallback):
    """SB3 callback: records each finished episode from its last ``info`` and stops after
    ``episodes`` episodes (so every agent, on- or off-policy, runs exactly that many)."""

    def __init__(self, episodes: int, on_episode: Callable[[EpisodeRecord], None] | None = None) -> None:
        super().__init__()
        self.target = episodes
        self.on_episode = on_episode
        self.records: list[EpisodeRecord] = []

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done and "policy" in info:
                record = EpisodeRecord.from_info(len(self.records), info)
                self.records.append(record)
                if self.on_episode is not None:
                    self.on_episode(record)
        return len(self.records) < self.target


def run_agent(
    env: EnvSource,
    config: AgentConfig,
    on_episode: Callable[[EpisodeRecord], None] | None = None,
) -> AgentResult:
    """Train the agent ``config.name`` for ``config.episodes`` episodes on the environment.

    Args:
        env: A :class:`PruningEnv`, or a function that builds one (called once).
        config: Agent, episodes, seed, warm-up and hyperparameters.
        on_episode: Called with every finished episode, cache hits included. Fresh evaluations
            are also reported by the environment's own ``on_candidate``.

    Returns:
        Every episode, the best by reward, evaluation and cache counts, and the trained model.
    """
    pruning_env = env if isinstance(env, PruningEnv) else env()
    spec = get_agent(config.name)
    steps = pruning_env.steps_per_episode
    hits_before = pruning_env.cache.hits
    evals_before = pruning_env.evaluations
    start = time.perf_counter()
    model = spec.build(pruning_env, config, steps)
    # Our own silent logger: SB3's default (verbose=0, no tensorboard) still makes an empty
    # tempdir/SB3-<time> folder on every learn(), one per trial, and never removes it.
    model.set_logger(Logger(folder=None, output_formats=[]))
    recorder = EpisodeRecorder(config.episodes, on_episode)
    model.learn(total_timesteps=config.episodes * steps, callback=recorder)
    records = recorder.records
    if not records:
        raise RuntimeError(f"agent {config.name!r} finished no episode in {config.episodes * steps} steps")
    best = max(records, key=lambda r: r.reward)  # max keeps the first of equal rewards
    return AgentResult(
        config=config,
        episodes=records,
        best=best,
        evaluations=pruning_env.evaluations - evals_before,
        cache_hits=pruning_env.cache.hits - hits_before,
        seconds=time.perf_counter() - start,
        model=model,
    )


def greedy_episode(model: BaseAlgorithm, env: PruningEnv, index: int = -1) -> EpisodeRecord:
    """Roll out the agent's deterministic policy (no exploration) for one episode.

    Shows what the agent has learned, as opposed to the best policy it happened to explore.
    """
    obs, _ = env.reset()
    while True:
        action, _ = model.predict(obs, deterministic=True)
        obs, _, done, _, info = env.step(np.asarray(action, dtype=np.float32))
        if done:
            return EpisodeRecord.from_info(index, info)
