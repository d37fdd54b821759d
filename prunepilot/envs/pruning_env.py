"""The pruning environment: one episode decides one policy, a step per prunable group.

Follows AMC (He et al., "AMC: AutoML for Model Compression and Acceleration on Mobile
Devices", ECCV 2018): the agent walks the model's dependency groups in order, sees a layer
embedding, answers with a keep ratio, and is rewarded once, at the end of the episode, by the
evaluated candidate. Latency replaces FLOPs as the constrained resource.

Example:
    >>> env = PruningEnv(evaluator.space, evaluator.evaluate, evaluator.predict_latency_ms,
    ...                  budget_ms=0.5 * evaluator.base.latency_ms)      # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from prunepilot.envs.budget import LatencyBudget, LatencyFn
from prunepilot.envs.cache import EvaluationCache
from prunepilot.envs.rewards import RewardContext, make_reward
from prunepilot.errors import ConfigError
from prunepilot.pruning import PruningPolicy, PruningSpace, round_width

OBSERVATION_FEATURES: tuple[str, ...] = (
    "index",  # position of the group, t / (T - 1)
    "kind_conv",  # one-hot layer kind of the group's root layer
    "kind_depthwise",
    "kind_linear",
    "kind_attention",
    "in_channels",  # root layer input channels / max over groups
    "out_channels",  # group channels / max over groups
    "kernel",  # kernel size / max over groups
    "stride",  # stride / max over groups
    "fmap",  # output feature-map height / max over groups
    "macs",  # MACs the group touches / max over groups
    "reduced",  # MACs already removed by earlier decisions / base MACs
    "rest",  # MACs still prunable by this and later groups / base MACs
    "prev_action",  # keep ratio taken for the previous group (1.0 at the first)
    "latency_share",  # the group's share of the latency all groups can save
    "budget_open",  # budget still open for this and later groups, in [0, 1]
)
"""Names of the observation's entries, in order; every entry is in [0, 1]."""

_KINDS = ("conv", "depthwise", "linear", "attention")

EvaluateFn = Callable[[PruningPolicy], Any]
"""Evaluates a policy; returns ``Metrics`` (a dataclass) or a mapping with at least
``accuracy`` (fraction) and ``latency_ms``."""

CandidateFn = Callable[[PruningPolicy, dict[str, Any]], None]
"""Called with each newly evaluated policy and its metrics dict."""


def metrics_dict(metrics: Any) -> dict[str, Any]:
    """Plain dict of a ``Metrics`` dataclass, a mapping, or an object with attributes."""
    if dataclasses.is_dataclass(metrics) and not isinstance(metrics, type):
        return dataclasses.asdict(metrics)
    if isinstance(metrics, Mapping):
        return dict(metrics)
    if hasattr(metrics, "__dict__"):
        return dict(vars(metrics))
    raise TypeError(f"evaluate returned {type(metrics).__name__}; expected Metrics or a mapping")


class PruningEnv(gym.Env[np.ndarray, np.ndarray]):
    """AMC-style pruning environment over a :class:`PruningSpace`'s groups.

    **Observation**: ``Box(0, 1, (16,), float32)``, AMC's layer embedding (group index, layer
    kind, in/out channels, kernel, stride, feature-map size, the group's MACs, MACs already
    removed, MACs still prunable, previous action) plus the group's share of the predicted
    latency and the budget still open; see :data:`OBSERVATION_FEATURES`.

    **Action**: ``Box(lower_bound, 1, (1,), float32)``: the keep ratio of the current group
    itself (not a rescaled value), so logs and policies read directly. Agents that prefer
    ``[-1, 1]`` rescale internally (stable-baselines3's off-policy agents do).

    **Budget** (AMC's resource-constrained mode): each ratio is clipped to the largest width
    that still lets the episode meet ``budget_ms`` with every later group at ``lower_bound``,
    so every finished episode is within budget by ``latency_ms``. The clipped ratio is what
    the policy records and what the next observation's ``prev_action`` shows.

    **Reward**: 0 on intermediate steps; at the last step the policy is built, evaluated (or
    found in the cache) and scored by the reward named ``reward``. The final ``info`` carries
    ``policy`` (JSON), ``metrics`` (dict), ``reward``, ``cache_hit``, ``episode_index``,
    ``predicted_latency_ms`` and ``budget_ms``.

    Args:
        space: The model's pruning space; one step per group, in ``space.groups`` order.
        evaluate: Evaluates a policy (``Evaluator.evaluate``).
        latency_ms: Fast, deterministic latency estimate at given widths
            (``Evaluator.predict_latency_ms``); used for budget clipping and observations.
        budget_ms: Latency budget in milliseconds.
        lower_bound: Smallest keep ratio of any group (AMC: 0.2).
        reward: Reward name (see :func:`~prunepilot.envs.list_rewards`).
        round_to: Widths are multiples of this (as in :meth:`PruningPolicy.from_ratios`).
        importance: Channel-selection criterion recorded in the policy.
        reward_kwargs: Settings of the reward (e.g. ``{"w": -0.07}`` for ``mnas``).
        on_candidate: Called as ``on_candidate(policy, metrics)`` for every policy that is
            actually evaluated (cache hits are not reported again).
        cache: Evaluation cache; pass one to share it between environments.

    Raises:
        ConfigError: bad lower bound, budget, round_to or reward; or a budget that even every
            group at the lower bound cannot meet (the message gives the reachable minimum).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        space: PruningSpace,
        evaluate: EvaluateFn,
        latency_ms: LatencyFn,
        budget_ms: float,
        *,
        lower_bound: float = 0.2,
        reward: str = "acc",
        round_to: int = 1,
        importance: str = "l1",
        reward_kwargs: Mapping[str, Any] | None = None,
        on_candidate: CandidateFn | None = None,
        cache: EvaluationCache | None = None,
    ) -> None:
        super().__init__()
        if not space.groups:
            raise ConfigError("the model has no prunable groups; there is nothing for an agent to decide")
        if int(round_to) < 1:
            raise ConfigError(f"round_to must be a positive integer, got {round_to!r}")
        self.space = space
        self.evaluate = evaluate
        self.latency_ms = latency_ms
        self.reward_name = reward
        self.reward_fn = make_reward(reward, **dict(reward_kwargs or {}))
        self.round_to = int(round_to)
        self.importance = importance
        self.on_candidate = on_candidate
        self.cache = cache if cache is not None else EvaluationCache()
        self.budget = LatencyBudget(space, latency_ms, budget_ms, lower_bound=lower_bound, round_to=round_to)
        self.budget_ms = self.budget.budget_ms
        self.lower_bound = self.budget.lower_bound
        self.n_groups = len(space.groups)
        self.observation_space = spaces.Box(0.0, 1.0, (len(OBSERVATION_FEATURES),), np.float32)
        self.action_space = spaces.Box(np.float32(self.lower_bound), np.float32(1.0), (1,), np.float32)
        self._static = self._static_features()
        self._latency_share = self._latency_shares()
        self._base_macs = max(1, space.macs(space.full_widths()))
        self.episodes = 0
        self.evaluations = 0
        self._chosen: list[int] = []
        self._ratios: list[float] = []

    # --- gymnasium API ---------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new policy at the first group."""
        super().reset(seed=seed)
        self._chosen = []
        self._ratios = []
        return self._observation(0), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Decide the current group's keep ratio (clipped to the budget); evaluate at the end."""
        t = len(self._chosen)
        if t >= self.n_groups:
            raise RuntimeError("the episode has ended; call reset() before step()")
        group = self.space.groups[t]
        requested = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        if math.isnan(requested):
            requested = self.lower_bound
        requested = min(1.0, max(self.lower_bound, requested))
        want = round_width(requested, group.channels, group.multiple, self.round_to)
        width = self.budget.largest_feasible(self._chosen, want)
        ratio = requested if width == want else width / group.channels
        self._chosen.append(width)
        self._ratios.append(ratio)
        info: dict[str, Any] = {
            "group": group.name,
            "requested_ratio": requested,
            "keep_ratio": ratio,
            "width": width,
            "clipped": width != want,
        }
        done = len(self._chosen) == self.n_groups
        reward = self._finish(info) if done else 0.0
        return self._observation(min(t + 1, self.n_groups - 1)), reward, done, False, info

    # --- episode end -------------------------------------------------------------------------
    def _finish(self, info: dict[str, Any]) -> float:
        policy = PruningPolicy.from_ratios(self.space, self._ratios, round_to=self.round_to, importance=self.importance)
        widths = self.budget.widths(self._chosen)
        if policy.channels != widths:  # the policy must be exactly what the budget checked
            raise RuntimeError(f"policy widths {policy.channels} differ from the decided widths {widths}")
        predicted = float(self.latency_ms(widths))
        metrics = self.cache.get(policy)
        cache_hit = metrics is not None
        if metrics is None:
            metrics = metrics_dict(self.evaluate(policy))
            metrics.setdefault("macs", self.space.macs(widths))
            self.cache.put(policy, metrics)
            self.evaluations += 1
            if self.on_candidate is not None:
                self.on_candidate(policy, dict(metrics))
        reward = self.reward_fn(metrics, RewardContext(self.budget_ms, self._base_macs))
        info.update(
            policy=policy.to_json(indent=None),
            metrics=metrics,
            reward=reward,
            cache_hit=cache_hit,
            episode_index=self.episodes,
            predicted_latency_ms=predicted,
            budget_ms=self.budget_ms,
        )
        self.episodes += 1
        return reward

    # --- observation -----------------------------------------------------------------------
    def _static_features(self) -> np.ndarray:
        groups = self.space.groups
        n = len(groups)
        rows = np.zeros((n, 11), dtype=np.float64)
        for i, g in enumerate(groups):
            kind = [1.0 if g.kind == k else 0.0 for k in _KINDS]
            rows[i] = [
                i / max(1, n - 1),
                *kind,
                g.in_channels,
                g.channels,
                g.kernel,
                g.stride,
                g.fmap,
                g.macs,
            ]
        for col in range(5, 11):
            top = rows[:, col].max()
            rows[:, col] = rows[:, col] / top if top > 0 else 0.0
        return rows

    def _latency_shares(self) -> np.ndarray:
        full = self.budget.full_ms
        savings = []
        for t in range(self.n_groups):
            widths = self.budget.widths([])
            widths[self.space.groups[t].name] = self.budget.min_widths[t]
            savings.append(max(0.0, full - float(self.latency_ms(widths))))
        total = sum(savings)
        return np.array([s / total if total > 0 else 1.0 / self.n_groups for s in savings])

    def _observation(self, t: int) -> np.ndarray:
        chosen = self._chosen[:t]
        now = self.space.macs(self.budget.widths(chosen))
        floor = self.space.macs(self.budget.widths(chosen, rest="min"))
        prev = self._ratios[t - 1] if t > 0 and len(self._ratios) >= t else 1.0
        dynamic = [
            (self._base_macs - now) / self._base_macs,
            (now - floor) / self._base_macs,
            prev,
            self._latency_share[t],
            self.budget.open_fraction(chosen),
        ]
        obs = np.concatenate([self._static[t], np.asarray(dynamic, dtype=np.float64)])
        return np.clip(obs, 0.0, 1.0).astype(np.float32)

    # --- conveniences ------------------------------------------------------------------------
    @property
    def steps_per_episode(self) -> int:
        """Steps of one episode: the number of prunable groups."""
        return self.n_groups

    def describe(self) -> dict[str, Any]:
        """Plain-data summary (for logs and run records)."""
        return {
            "groups": self.n_groups,
            "budget_ms": self.budget_ms,
            "full_ms": self.budget.full_ms,
            "reachable_ms": self.budget.reachable_ms,
            "lower_bound": self.lower_bound,
            "reward": self.reward_name,
            "round_to": self.round_to,
            "importance": self.importance,
            "episodes": self.episodes,
            "evaluations": self.evaluations,
            "cache_hits": self.cache.hits,
        }
