"""Reinforcement-learning agents by name, built on stable-baselines3.

Each :class:`AgentSpec` names an SB3 algorithm, the hyperparameters prunepilot sets itself
(derived from the episode length and warm-up, so not accepted from config), the extra
settings it adds, and the defaults that suit the pruning environment: short fixed-length
episodes whose only reward comes at the end.

============  ==========================================================================
``amc-ddpg``  DDPG with AMC's settings (He et al., ECCV 2018): see :mod:`.amc`.
``td3``       SB3's TD3 (Fujimoto et al., ICML 2018), Gaussian exploration, episodic training.
``sac``       SB3's SAC (Haarnoja et al., ICML 2018), episodic training.
``ppo``       SB3's PPO (Schulman et al., 2017), rollouts of whole episodes.
============  ==========================================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import DDPG, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise

from prunepilot.errors import ConfigError, one_of
from prunepilot.policies.amc import AMCDDPG, EpisodeRewardBuffer, TruncatedNormalNoise

if TYPE_CHECKING:
    from prunepilot.policies.config import AgentConfig

BuildFn = Callable[[gym.Env, "AgentConfig", int], BaseAlgorithm]
"""``build(env, config, steps_per_episode) -> SB3 algorithm``."""

_NEVER = frozenset({"self", "policy", "env", "seed", "_init_setup_model"})


@dataclass(frozen=True)
class AgentSpec:
    """One agent of the registry.

    Attributes:
        name: Registry name (``amc-ddpg``).
        algorithm: The SB3 class whose constructor keyword arguments are accepted.
        build: Builds the SB3 algorithm for an environment, a config and the episode length.
        reserved: Constructor arguments prunepilot sets itself (not accepted as hyperparameters).
        extras: Extra settings the agent accepts, with their defaults.
        uses_warmup: Whether the agent has a random warm-up phase (``warmup_episodes``).
        description: One line for listings.
    """

    name: str
    algorithm: type[BaseAlgorithm]
    build: BuildFn
    reserved: frozenset[str] = frozenset()
    extras: Mapping[str, Any] = field(default_factory=dict)
    uses_warmup: bool = True
    description: str = ""

    def accepted_hyperparams(self) -> list[str]:
        """Names ``AgentConfig.hyperparams`` may use for this agent, sorted."""
        params = inspect.signature(self.algorithm.__init__).parameters
        native = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
        return sorted((native - _NEVER - self.reserved) | set(self.extras))

    def check_hyperparams(self, hyperparams: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` naming unknown hyperparameters and listing the valid ones."""
        accepted = set(self.accepted_hyperparams())
        unknown = sorted(set(hyperparams) - accepted)
        if unknown:
            reserved = sorted(set(unknown) & self.reserved)
            why = (
                f" ({', '.join(map(repr, reserved))} {'is' if len(reserved) == 1 else 'are'} set by "
                "prunepilot from episodes/warmup_episodes)"
                if reserved
                else ""
            )
            raise ConfigError(
                f"agent {self.name!r} has no hyperparameter {', '.join(map(repr, unknown))}{why}; "
                f"valid hyperparameters are {one_of(sorted(accepted))}"
            )


_AGENTS: dict[str, AgentSpec] = {}


def register_agent(spec: AgentSpec) -> AgentSpec:
    """Add ``spec`` to the registry (its name must be new)."""
    if spec.name in _AGENTS:
        raise ConfigError(f"agent {spec.name!r} is already registered")
    _AGENTS[spec.name] = spec
    return spec


def list_agents() -> list[str]:
    """Names of the registered agents, sorted."""
    return sorted(_AGENTS)


def get_agent(name: str) -> AgentSpec:
    """The agent called ``name``; raises :class:`ConfigError` listing the valid names."""
    try:
        return _AGENTS[name]
    except KeyError:
        raise ConfigError(f"unknown agent {name!r}; valid agents are {one_of(list_agents())}") from None


# --- builders --------------------------------------------------------------------------------
def _split(config: AgentConfig, extras: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(sb3 kwargs given, extras with defaults filled)`` from the config's hyperparams."""
    given = dict(config.hyperparams)
    extra = {k: given.pop(k, v) for k, v in extras.items()}
    return given, extra


def _merge(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    merged = {**defaults, **given}
    if "policy_kwargs" in defaults and "policy_kwargs" in given:
        merged["policy_kwargs"] = {**defaults["policy_kwargs"], **given["policy_kwargs"]}
    return merged


def _scaled_sigma(env: gym.Env, sigma_in_ratio_units: float) -> float:
    """A standard deviation in keep-ratio units, in the agent's [-1, 1] action units."""
    space = env.action_space
    width = float(np.max(np.asarray(space.high) - np.asarray(space.low)))  # type: ignore[attr-defined]
    return sigma_in_ratio_units * 2.0 / max(width, 1e-9)


_AMC_EXTRAS = {
    "actor_lr": 1e-4,
    "critic_lr": 1e-3,
    "noise_sigma": 0.5,
    "noise_decay": 0.95,
    "baseline_alpha": 0.5,
}


def _build_amc_ddpg(env: gym.Env, config: AgentConfig, steps: int) -> BaseAlgorithm:
    given, extra = _split(config, _AMC_EXTRAS)
    warmup = config.resolved_warmup()
    defaults: dict[str, Any] = {
        "buffer_size": 100 * steps,  # AMC: rmsize 100 episodes' worth of transitions
        "batch_size": 64,
        "tau": 0.01,
        "gamma": 1.0,
        "train_freq": (1, "episode"),
        "gradient_steps": -1,  # AMC: one update per transition, at the episode's end
        "policy_kwargs": {"net_arch": [300, 300]},
        "device": "cpu",
        "verbose": 0,
    }
    noise = TruncatedNormalNoise(
        _scaled_sigma(env, extra["noise_sigma"]), extra["noise_decay"], warmup, seed=config.seed
    )
    return AMCDDPG(
        "MlpPolicy",
        env,
        actor_lr=extra["actor_lr"],
        critic_lr=extra["critic_lr"],
        action_noise=noise,
        replay_buffer_class=EpisodeRewardBuffer,
        replay_buffer_kwargs={"baseline_alpha": extra["baseline_alpha"]},
        learning_starts=warmup * steps,
        seed=config.seed,
        **_merge(defaults, given),
    )


def _off_policy_defaults(steps: int) -> dict[str, Any]:
    return {
        "buffer_size": 100 * steps,
        "batch_size": 64,
        "tau": 0.01,
        "gamma": 1.0,  # finite horizon: the end-of-episode reward counts fully at every step
        "train_freq": (1, "episode"),
        "gradient_steps": -1,
        "device": "cpu",
        "verbose": 0,
    }


def _build_td3(env: gym.Env, config: AgentConfig, steps: int) -> BaseAlgorithm:
    given, extra = _split(config, {"noise_sigma": 0.1})
    sigma = _scaled_sigma(env, extra["noise_sigma"])
    noise = NormalActionNoise(np.zeros(1), np.full(1, sigma))
    return TD3(
        "MlpPolicy",
        env,
        action_noise=noise,
        learning_starts=config.resolved_warmup() * steps,
        seed=config.seed,
        **_merge(_off_policy_defaults(steps), given),
    )


def _build_sac(env: gym.Env, config: AgentConfig, steps: int) -> BaseAlgorithm:
    given, _ = _split(config, {})
    return SAC(
        "MlpPolicy",
        env,
        learning_starts=config.resolved_warmup() * steps,
        seed=config.seed,
        **_merge(_off_policy_defaults(steps), given),
    )


def _build_ppo(env: gym.Env, config: AgentConfig, steps: int) -> BaseAlgorithm:
    given, extra = _split(config, {"episodes_per_rollout": 8})
    n_steps = int(given.get("n_steps", steps * int(extra["episodes_per_rollout"])))
    defaults: dict[str, Any] = {
        "n_steps": n_steps,
        "batch_size": n_steps,  # one minibatch per rollout: rollouts are short
        "n_epochs": 10,
        "gamma": 1.0,
        "gae_lambda": 0.95,
        "learning_rate": 3e-4,
        "ent_coef": 0.0,
        # std 0.37 in keep-ratio units: PPO's Gaussian is not squashed, so a unit std would
        # clip most actions to the bounds of the [lower_bound, 1] action box
        "policy_kwargs": {"log_std_init": -1.0},
        "device": "cpu",
        "verbose": 0,
    }
    return PPO("MlpPolicy", env, seed=config.seed, **_merge(defaults, given))


_OFF_POLICY_RESERVED = frozenset({"learning_starts", "action_noise"})

register_agent(
    AgentSpec(
        name="amc-ddpg",
        algorithm=DDPG,
        build=_build_amc_ddpg,
        reserved=_OFF_POLICY_RESERVED | {"learning_rate", "replay_buffer_class", "replay_buffer_kwargs", "n_steps"},
        extras=_AMC_EXTRAS,
        description="DDPG with AMC's warm-up, truncated-normal decaying noise, delayed reward, baseline",
    )
)
register_agent(
    AgentSpec(
        name="td3",
        algorithm=TD3,
        build=_build_td3,
        reserved=_OFF_POLICY_RESERVED,
        extras={"noise_sigma": 0.1},
        description="SB3 TD3, Gaussian exploration noise (noise_sigma in keep-ratio units)",
    )
)
register_agent(
    AgentSpec(
        name="sac",
        algorithm=SAC,
        build=_build_sac,
        reserved=_OFF_POLICY_RESERVED,
        description="SB3 SAC with automatic entropy tuning",
    )
)
register_agent(
    AgentSpec(
        name="ppo",
        algorithm=PPO,
        build=_build_ppo,
        extras={"episodes_per_rollout": 8},
        uses_warmup=False,
        description="SB3 PPO, each rollout a whole number of episodes",
    )
)
