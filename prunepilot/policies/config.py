"""Configuration of one agent run (pydantic), validated against the agent registry."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prunepilot.errors import ConfigError
from prunepilot.policies.agents import get_agent


class AgentConfig(BaseModel):
    """One reinforcement-learning agent run: which agent, how long, which seed, which settings.

    Example:
        >>> cfg = AgentConfig(name="amc-ddpg", episodes=200, seed=1, hyperparams={"tau": 0.01})
        >>> cfg.resolved_warmup()
        50
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("amc-ddpg", description="Agent name from the registry: 'amc-ddpg', 'ppo', 'sac' or 'td3'.")
    episodes: int = Field(
        200, ge=1, description="Episodes to run; each decides and evaluates one policy (cache hits included)."
    )
    seed: int = Field(0, description="Seed of the agent's networks, exploration noise and the environment.")
    warmup_episodes: int | None = Field(
        None,
        ge=0,
        description="Episodes of uniform random actions before learning (AMC: 100 of 400); None: a quarter "
        "of episodes, at most 100. Not available for 'ppo'.",
    )
    hyperparams: dict[str, Any] = Field(
        default_factory=dict,
        description="Constructor arguments of the agent's SB3 algorithm (tau, batch_size, policy_kwargs...) "
        "and the agent's extras (amc-ddpg: actor_lr, critic_lr, noise_sigma, noise_decay, "
        "baseline_alpha). Unknown names are an error listing the accepted ones.",
    )

    @field_validator("name")
    @classmethod
    def _known_agent(cls, name: str) -> str:
        get_agent(name)
        return name

    @model_validator(mode="after")
    def _check(self) -> AgentConfig:
        spec = get_agent(self.name)
        spec.check_hyperparams(self.hyperparams)
        if self.warmup_episodes is not None:
            if not spec.uses_warmup:
                raise ConfigError(f"agent {self.name!r} has no random warm-up phase; leave warmup_episodes unset")
            if self.warmup_episodes >= self.episodes:
                raise ConfigError(
                    f"warmup_episodes ({self.warmup_episodes}) must be fewer than episodes "
                    f"({self.episodes}), or the agent never learns"
                )
        return self

    def resolved_warmup(self) -> int:
        """Warm-up episodes actually used (0 for agents without a warm-up phase)."""
        if not get_agent(self.name).uses_warmup:
            return 0
        if self.warmup_episodes is not None:
            return self.warmup_episodes
        return min(100, self.episodes // 4)
