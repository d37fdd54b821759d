"""Latency budgets over group widths: AMC's resource-constrained action clipping.

AMC (He et al., ECCV 2018, section 3.4) keeps every episode within a resource budget by
limiting each layer's action: the agent may keep at most as much of the current layer as
still lets the episode meet the budget *if every later layer is pruned to the lower bound*.
:class:`LatencyBudget` does this for latency, which — unlike FLOPs — is not additive over
layers in general, so the largest feasible width is searched (by bisection over the allowed
widths) with the true latency function, not computed from per-layer shares.

The guarantee rests on one invariant: before group ``t`` is decided, the widths chosen so far
with every group from ``t`` on at its minimum width are within budget. It holds at the start
(checked at construction) and each decision keeps it, so every finished episode is within
budget for any latency function that is deterministic, monotone or not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from prunepilot.errors import ConfigError
from prunepilot.pruning import PruningPolicy, PruningSpace, round_width

LatencyFn = Callable[[Mapping[str, int]], float]
"""Latency in ms of the model at the given group widths (e.g. ``Evaluator.predict_latency_ms``)."""


def allowed_widths(channels: int, multiple: int, round_to: int, lower_bound: float) -> list[int]:
    """Widths a group may take, ascending: from the lower bound's width up to full width.

    Widths are those :func:`~prunepilot.pruning.round_width` can produce: multiples of
    ``lcm(round_to, multiple)`` and the full channel count.
    """
    low = round_width(lower_bound, channels, multiple, round_to)
    step = math.lcm(max(1, round_to), max(1, multiple))
    widths = list(range(low, channels, step)) if low < channels else []
    return [*widths, channels]


class LatencyBudget:
    """Which widths the next group may keep so that the episode can still meet ``budget_ms``.

    Args:
        space: The model's pruning space.
        latency_ms: Latency at given widths; must be deterministic (same widths, same value).
        budget_ms: The latency budget.
        lower_bound: Smallest keep ratio any group may take.
        round_to: Widths are rounded to multiples of this (as in :class:`PruningPolicy`).

    Raises:
        ConfigError: the budget is not positive, or even every group at ``lower_bound`` is
            slower than the budget (the message gives the reachable minimum).
    """

    def __init__(
        self,
        space: PruningSpace,
        latency_ms: LatencyFn,
        budget_ms: float,
        *,
        lower_bound: float = 0.2,
        round_to: int = 1,
    ) -> None:
        if not (0.0 < lower_bound <= 1.0):
            raise ConfigError(f"lower_bound {lower_bound!r} must be in (0, 1]; AMC uses 0.2")
        if not (budget_ms > 0 and math.isfinite(budget_ms)):
            raise ConfigError(f"budget_ms {budget_ms!r} must be a positive number of milliseconds")
        self.space = space
        self.latency_ms = latency_ms
        self.budget_ms = float(budget_ms)
        self.lower_bound = float(lower_bound)
        self.round_to = int(round_to)
        self.allowed = [allowed_widths(g.channels, g.multiple, round_to, lower_bound) for g in space.groups]
        self.min_widths = [a[0] for a in self.allowed]
        self.full_widths = [g.channels for g in space.groups]
        self.full_ms = float(latency_ms(self.widths([])))
        self.reachable_ms = float(latency_ms(self.widths([], rest="min")))
        if self.reachable_ms > self.budget_ms:
            raise ConfigError(
                f"latency budget {self.budget_ms:.4g} ms cannot be met: with every group at the lower "
                f"bound {self.lower_bound:g} the model still takes {self.reachable_ms:.4g} ms (the "
                f"reachable minimum; full model {self.full_ms:.4g} ms). Raise the budget to at least "
                f"{self.reachable_ms:.4g} ms or lower lower_bound."
            )

    def widths(self, chosen: Sequence[int], rest: str = "full") -> dict[str, int]:
        """Widths by group name: ``chosen`` for the first groups, the rest at ``"full"`` or ``"min"``."""
        tail = self.full_widths if rest == "full" else self.min_widths
        values = [*chosen, *tail[len(chosen) :]]
        return {g.name: int(w) for g, w in zip(self.space.groups, values, strict=True)}

    def feasible(self, chosen: Sequence[int]) -> bool:
        """Whether ``chosen`` (first groups) with every later group at its minimum meets the budget."""
        return float(self.latency_ms(self.widths(chosen, rest="min"))) <= self.budget_ms

    def largest_feasible(self, chosen: Sequence[int], requested: int) -> int:
        """The largest allowed width, at most ``requested``, for group ``len(chosen)`` that keeps
        the episode feasible (the invariant makes the group's minimum width always feasible).

        Bisection over the allowed widths: exact for latencies monotone in width, and still a
        feasible (if not always the largest) width otherwise.
        """
        t = len(chosen)
        candidates = [w for w in self.allowed[t] if w <= requested] or [self.allowed[t][0]]
        if self.feasible([*chosen, candidates[-1]]):
            return candidates[-1]
        lo, hi = 0, len(candidates) - 1  # candidates[lo] feasible (invariant), candidates[hi] not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.feasible([*chosen, candidates[mid]]):
                lo = mid
            else:
                hi = mid
        return candidates[lo]

    def open_fraction(self, chosen: Sequence[int]) -> float:
        """How much of the remaining groups' prunable latency the budget still allows, in [0, 1].

        1: every remaining group may stay at full width; 0: all must go to the lower bound.
        """
        low = float(self.latency_ms(self.widths(chosen, rest="min")))
        high = float(self.latency_ms(self.widths(chosen, rest="full")))
        if high - low <= 0:
            return 1.0
        return min(1.0, max(0.0, (self.budget_ms - low) / (high - low)))


def uniform_within_budget(
    space: PruningSpace,
    latency_ms: LatencyFn,
    budget_ms: float,
    *,
    lower_bound: float = 0.2,
    round_to: int = 1,
    importance: str = "l1",
    iterations: int = 40,
) -> PruningPolicy:
    """The uniform policy with the largest keep ratio whose latency meets ``budget_ms``.

    The baseline every searched policy is compared with (bisection on the ratio; exact for
    latencies monotone in width).

    Raises:
        ConfigError: uniform pruning to ``lower_bound`` is still slower than the budget.
    """

    def make(ratio: float) -> PruningPolicy:
        return PruningPolicy.uniform(space, ratio, round_to=round_to, importance=importance)

    if float(latency_ms(make(1.0).channels)) <= budget_ms:
        return make(1.0)
    low_ms = float(latency_ms(make(lower_bound).channels))
    if low_ms > budget_ms:
        raise ConfigError(
            f"uniform pruning cannot meet {budget_ms:.4g} ms: at keep ratio {lower_bound:g} the model "
            f"takes {low_ms:.4g} ms; raise the budget or lower lower_bound"
        )
    lo, hi = lower_bound, 1.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if float(latency_ms(make(mid).channels)) <= budget_ms:
            lo = mid
        else:
            hi = mid
    return make(lo)
