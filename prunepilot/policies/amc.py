"""What AMC's DDPG adds to stable-baselines3's DDPG, as small replaceable parts.

AMC (He et al., ECCV 2018; reference code ``mit-han-lab/amc``, ``lib/agent.py`` and
``amc_search.py``) trains DDPG with four settings SB3 does not have out of the box:

1. **Delayed reward assignment**: the reward is known only when the episode's policy is
   evaluated, and every transition of the episode receives that final reward
   (:class:`EpisodeRewardBuffer.add`).
2. **Moving-average baseline**: each sampled batch's rewards are centred by an exponential
   moving average of batch means (``moving_alpha = 0.5``) before the critic target is formed
   (:class:`EpisodeRewardBuffer.sample`).
3. **Truncated-normal exploration**: after the random warm-up episodes, the action is drawn
   from a normal around the actor's output, truncated to the action bounds, with a standard
   deviation that starts at 0.5 (in keep-ratio units) and decays by 0.95 per episode
   (:class:`TruncatedNormalNoise`, used by :meth:`AMCDDPG._sample_action`).
4. **Separate learning rates** for actor (1e-4) and critic (1e-3) (:class:`AMCDDPG`).

Everything else (networks, soft target updates, training loop) is SB3's DDPG unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DDPG
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.utils import update_learning_rate
from stable_baselines3.common.vec_env import VecNormalize


class EpisodeRewardBuffer(ReplayBuffer):
    """A replay buffer that gives every transition of an episode the episode's final reward,
    and centres sampled rewards by a moving-average baseline (AMC).

    Args:
        baseline_alpha: Weight of the newest batch mean in the moving average (AMC: 0.5).
        *args, **kwargs: As for :class:`~stable_baselines3.common.buffers.ReplayBuffer`.
    """

    def __init__(self, *args: Any, baseline_alpha: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.n_envs != 1:
            raise ValueError(f"EpisodeRewardBuffer needs one environment (got n_envs={self.n_envs})")
        if not 0.0 < baseline_alpha <= 1.0:
            raise ValueError(f"baseline_alpha {baseline_alpha!r} must be in (0, 1]")
        self.baseline_alpha = float(baseline_alpha)
        self.baseline: float | None = None
        self._episode_rows: list[int] = []

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store a transition; at the episode's end, write its reward into all its transitions."""
        row = self.pos
        super().add(obs, next_obs, action, reward, done, infos)
        self._episode_rows.append(row)
        if bool(np.asarray(done).reshape(-1)[0]):
            final = float(np.asarray(reward, dtype=np.float64).reshape(-1)[0])
            self.rewards[self._episode_rows, 0] = final
            self._episode_rows = []

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """A batch with rewards minus the updated moving-average baseline."""
        batch = super().sample(batch_size, env)
        mean = float(batch.rewards.mean().item())
        if self.baseline is None:
            self.baseline = mean
        else:
            self.baseline += self.baseline_alpha * (mean - self.baseline)
        return batch._replace(rewards=batch.rewards - self.baseline)


class TruncatedNormalNoise(ActionNoise):
    """AMC's exploration: a normal around the actor's action, truncated to the bounds.

    Works in the agent's scaled action units ``[-1, 1]``. The standard deviation is
    ``sigma * decay ** max(0, episodes - warmup_episodes)``, where :attr:`episodes` (finished
    episodes) is set by :class:`AMCDDPG` from SB3's episode counter before each draw (SB3's
    ``reset`` calls are not a reliable count: it also resets the noise when learning starts).

    Args:
        sigma: Initial standard deviation in scaled units.
        decay: Factor per episode after warm-up (AMC: 0.95).
        warmup_episodes: Episodes of uniform random actions before the decay starts.
        seed: Seed of the noise's own random generator.
    """

    def __init__(self, sigma: float, decay: float, warmup_episodes: int, seed: int | None = None) -> None:
        super().__init__()
        if sigma < 0 or not 0.0 < decay <= 1.0:
            raise ValueError(f"noise sigma {sigma!r} must be >= 0 and decay {decay!r} in (0, 1]")
        self.initial_sigma = float(sigma)
        self.decay = float(decay)
        self.warmup_episodes = int(warmup_episodes)
        self.episodes = 0
        self.rng = np.random.default_rng(seed)

    @property
    def sigma(self) -> float:
        """The current standard deviation (scaled units)."""
        return self.initial_sigma * self.decay ** max(0, self.episodes - self.warmup_episodes)

    def __call__(self) -> np.ndarray:
        """Untruncated zero-mean noise (for callers that only add noise)."""
        return np.asarray(self.rng.normal(0.0, self.sigma), dtype=np.float32)

    def sample_around(self, mean: np.ndarray, low: float = -1.0, high: float = 1.0) -> np.ndarray:
        """Draw from ``N(mean, sigma)`` truncated to ``[low, high]`` (by rejection, per entry)."""
        mean = np.clip(np.asarray(mean, dtype=np.float64), low, high)
        sigma = self.sigma
        if sigma <= 0:
            return mean.astype(np.float32)
        out = np.empty_like(mean)
        for idx, mu in np.ndenumerate(mean):
            for _ in range(1000):
                x = self.rng.normal(mu, sigma)
                if low <= x <= high:
                    break
            else:  # pragma: no cover - acceptance is at least ~16% for any mean and sigma
                x = float(np.clip(x, low, high))
            out[idx] = x
        return out.astype(np.float32)


class AMCDDPG(DDPG):
    """SB3's DDPG with AMC's truncated-normal exploration and separate actor/critic rates.

    Args:
        actor_lr: Actor learning rate (AMC: 1e-4).
        critic_lr: Critic learning rate (AMC: 1e-3).
        *args, **kwargs: As for :class:`~stable_baselines3.DDPG` (``learning_rate`` is set
            from ``critic_lr``; pass ``action_noise=TruncatedNormalNoise(...)`` for AMC's noise).
    """

    def __init__(self, *args: Any, actor_lr: float = 1e-4, critic_lr: float = 1e-3, **kwargs: Any) -> None:
        self.actor_lr = float(actor_lr)
        self.critic_lr = float(critic_lr)
        kwargs["learning_rate"] = self.critic_lr
        super().__init__(*args, **kwargs)

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        self.logger.record("train/actor_learning_rate", self.actor_lr)
        self.logger.record("train/critic_learning_rate", self.critic_lr)
        update_learning_rate(self.actor.optimizer, self.actor_lr)
        update_learning_rate(self.critic.optimizer, self.critic_lr)

    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Warm-up: uniform random actions without noise; then truncated-normal exploration."""
        if not isinstance(action_noise, TruncatedNormalNoise) or not isinstance(self.action_space, spaces.Box):
            return super()._sample_action(learning_starts, action_noise, n_envs)
        if self.num_timesteps < learning_starts:
            unscaled = np.array([self.action_space.sample() for _ in range(n_envs)])
            scaled = self.policy.scale_action(unscaled)
        else:
            assert self._last_obs is not None, "self._last_obs was not set"
            unscaled, _ = self.predict(self._last_obs, deterministic=True)
            action_noise.episodes = self._episode_num
            scaled = action_noise.sample_around(self.policy.scale_action(unscaled))
        return self.policy.unscale_action(scaled), scaled
