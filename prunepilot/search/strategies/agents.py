"""AMC-style reinforcement-learning agents as Tune trials (``amc-ddpg``, ``ppo``, ``sac``, ``td3``).

A trial is one agent run with its own seed and budget: it walks the prunable groups of a
:class:`~prunepilot.envs.PruningEnv` (AMC's resource-constrained mode: every episode is within
budget), and every episode is reported as a candidate (to Tune on the Ray backend, so Tune
schedulers can stop or mutate agents). Several trials with budgets spread over a range
(``settings.budgets``) trace the front.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from prunepilot.errors import ConfigError
from prunepilot.search.records import Metrics
from prunepilot.search.space import Grid
from prunepilot.search.strategies.base import Strategy, StrategySettings, register_strategy
from prunepilot.search.strategies.context import DriverContext, TrialContext, TuneSetup


class AgentSettings(StrategySettings):
    """Settings of the RL strategies (episodes come from ``strategy.evaluations``)."""

    reward: str = Field(
        "acc",
        description="Reward name: acc (AMC's accuracy under the constrained action space), acc_log_flops, "
        "acc_log_latency (AMC's -error * log(latency)), mnas, lagrangian.",
    )
    reward_kwargs: dict[str, Any] = Field(default_factory=dict, description="Reward parameters (e.g. w, lam).")
    budgets: list[float] | None = Field(
        None,
        description="Budget per trial as fractions of the base latency (one trial each); "
        "default: every trial uses the search budget.",
    )
    warmup_episodes: int | None = Field(None, ge=0, description="Random-action episodes before learning.")
    hyperparams: dict[str, Any] = Field(default_factory=dict, description="SB3 / AMC hyperparameters.")

    @field_validator("budgets")
    @classmethod
    def _fractions(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(not 0 < b <= 1 for b in v)):
            raise ValueError(f"budgets {v} must be a non-empty list of fractions in (0, 1]")
        return v


class _AgentStrategy(Strategy):
    kind = "session"
    Settings = AgentSettings
    settings: AgentSettings
    agent = "?"

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        from prunepilot.envs import make_reward
        from prunepilot.policies import AgentConfig

        s = self.settings
        try:  # fail before Ray starts on bad reward, agent or hyperparameter names
            make_reward(s.reward, **s.reward_kwargs)
            AgentConfig(
                name=self.agent,
                episodes=max(2, (s.warmup_episodes or 0) + 1),
                warmup_episodes=s.warmup_episodes,
                hyperparams=s.hyperparams,
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"field 'strategy.settings' of strategy {self.name!r}: {exc}") from None

    def tune_setup(self, ctx: DriverContext) -> TuneSetup:
        budgets = self.settings.budgets
        trials = len(budgets) if budgets else ctx.trials
        return TuneSetup({"trial_index": Grid(range(trials))}, num_samples=1)

    def run_trial(self, ctx: TrialContext, params: Mapping[str, Any]) -> None:
        from prunepilot.envs import PruningEnv
        from prunepilot.policies import AgentConfig, EpisodeRecord, run_agent

        s = self.settings
        index = int(params.get("trial_index", 0))
        budgets = s.budgets
        budget_ms = budgets[index] * ctx.base_latency_ms if budgets else ctx.budget_ms

        def on_episode(rec: EpisodeRecord) -> None:
            ctx.report(
                rec.policy,
                Metrics.from_json(rec.metrics),
                {"episode": rec.index, "reward": rec.reward, "trial_budget_ms": budget_ms, "cached": rec.cache_hit},
            )

        env = PruningEnv(
            ctx.space,
            ctx.evaluator.evaluate,
            ctx.predict_latency_ms,
            budget_ms,
            lower_bound=ctx.lower_bound,
            reward=s.reward,
            round_to=ctx.round_to,
            importance=ctx.importance,
            reward_kwargs=s.reward_kwargs,
        )
        cfg = AgentConfig(
            name=self.agent,
            episodes=ctx.evaluations,
            seed=ctx.seed,
            warmup_episodes=s.warmup_episodes,
            hyperparams=s.hyperparams,
        )
        run_agent(env, cfg, on_episode=on_episode)


@register_strategy
class AMCDDPGStrategy(_AgentStrategy):
    """AMC's DDPG agent (He et al., ECCV 2018) with its exploration and reward settings."""

    name = "amc-ddpg"
    agent = "amc-ddpg"
    description = "AMC DDPG agent walking the groups, budget-constrained episodes (He et al. 2018)"


@register_strategy
class PPOStrategy(_AgentStrategy):
    """stable-baselines3 PPO on the pruning environment."""

    name = "ppo"
    agent = "ppo"
    description = "stable-baselines3 PPO on the pruning environment"


@register_strategy
class SACStrategy(_AgentStrategy):
    """stable-baselines3 SAC on the pruning environment."""

    name = "sac"
    agent = "sac"
    description = "stable-baselines3 SAC on the pruning environment"


@register_strategy
class TD3Strategy(_AgentStrategy):
    """stable-baselines3 TD3 on the pruning environment."""

    name = "td3"
    agent = "td3"
    description = "stable-baselines3 TD3 on the pruning environment"
