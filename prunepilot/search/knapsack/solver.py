"""LatencyKnapsack: bound, reduction and MILP; the answer at one budget or a sweep.

See :mod:`prunepilot.search.knapsack` for the formulation.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from prunepilot.errors import PruningError
from prunepilot.hw_models.base import LatencyModel
from prunepilot.pruning import PruningSpace
from prunepilot.search.knapsack.cliques import CliqueTree
from prunepilot.search.knapsack.latency_table import (
    LatencyTable,
    group_values,
)
from prunepilot.search.knapsack.mckp import (
    JUNCTION_TREE_TUPLES,
    TABLE_SLACK,
    JointTerm,
    _milp,
    junction_tree,
)

Widths = dict[str, int]


@dataclass(frozen=True)
class KnapsackSolution:
    """One solve: the widths, their predicted latency and value, and how it was found.

    Attributes:
        widths: One width per group.
        predicted_ms: The latency model's whole-model prediction at ``widths`` (<= ``budget_ms``).
        budget_ms: The budget solved for.
        value: Summed importance of the kept channels (:func:`group_values`).
        bound: The Lagrangian upper bound on any feasible value (the optimum may lie below it).
        optimal: Whether ``value`` is proven optimal (bound met, or the reduced MILP finished).
        kept_choices: Widths left per group after the exact reduction (summed over groups).
        seconds: Time of the whole solve.
    """

    widths: Widths
    predicted_ms: float
    budget_ms: float
    value: float
    bound: float
    optimal: bool
    kept_choices: int
    seconds: float


class LatencyKnapsack:
    """The knapsack of one pruning space, importance and layer-additive latency model.

    Args:
        space: The model's pruning space.
        choices: Allowed widths per group, ascending (e.g. a thinned
            :class:`~prunepilot.oneshot.widths.WidthGrid`'s ``choices``).
        scores: Per-group, per-channel importance at full width (higher keeps), e.g.
            :func:`prunepilot.pruning.adapter.group_scores`; None when ``values`` is given.
        latency: A latency model that predicts from layer shapes and is a sum over layers.
        batch_size: Batch size of the latency figures.
        normalize: Divide each group's scores by their total (see :func:`normalizes`).
        values: ``values[g][w]``, the value of group ``g`` at each width of ``choices[g]``, used
            instead of the channels' summed importance (e.g. a measured sensitivity: the accuracy
            with only ``g`` pruned to ``w``, :func:`prunepilot.search.knapsack.sensitivity.sensitivity_values`).
    """

    def __init__(
        self,
        space: PruningSpace,
        choices: Mapping[str, Sequence[int]],
        scores: Mapping[str, torch.Tensor] | None,
        latency: LatencyModel,
        *,
        batch_size: int = 1,
        normalize: bool = True,
        values: Mapping[str, Mapping[int, float]] | None = None,
    ) -> None:
        if (scores is None) == (values is None):
            raise ValueError("LatencyKnapsack needs exactly one of scores and values")
        self.space, self.latency, self.batch_size = space, latency, batch_size
        self.table = LatencyTable.build(space, choices, latency, batch_size)
        self.choices = self.table.choices
        if values is not None:
            missing = [f"{g}@{w}" for g, ws in self.choices.items() for w in ws if int(w) not in values.get(g, {})]
            if missing:
                raise ValueError(f"knapsack values lack these group@width choices: {', '.join(missing[:8])}")
            self.value = {g: {int(w): float(values[g][int(w)]) for w in ws} for g, ws in self.choices.items()}
        else:
            assert scores is not None
            self.value = group_values(scores, self.choices, normalize, {g.name: g.multiple for g in space.groups})
        t = self.table
        self.tree = CliqueTree(list(t.choices), {g: len(c) for g, c in t.choices.items()}, [j.groups for j in t.joint])
        self._values = {g: np.array([self.value[g][w] for w in t.choices[g]]) for g in t.choices}
        self._v = self.tree.potential(self._values, [])
        self._c = self.tree.potential(t.unary, [(j.groups, j.ms) for j in t.joint])

    def predict_ms(self, widths: Mapping[str, int]) -> float:
        """Whole-model predicted latency at ``widths``."""
        return float(self.latency.predict_ms(self.space, widths, self.batch_size).ms)

    def total_value(self, widths: Mapping[str, int]) -> float:
        """Summed importance of the channels ``widths`` keeps."""
        return sum(self.value[g][int(widths[g])] for g in self.choices)

    def _widths(self, pick: Mapping[str, int]) -> Widths:
        return {g: self.choices[g][pick[g]] for g in self.choices}

    def _dual(self, lam: float, budget: float) -> tuple[dict[str, int], float, float, float]:
        """The Lagrangian at ``lam``: its maximiser (choice indices), bound, value and latency."""
        theta = [v - lam * c for v, c in zip(self._v, self._c, strict=True)]
        belief, _, top = self.tree.collect(theta)
        pick = self.tree.decode(belief)
        widths = self._widths(pick)
        return pick, top + lam * budget, self.total_value(widths), self.table.predict_ms(widths)

    def solve(self, budget_ms: float, *, time_limit_s: float = 0.5) -> KnapsackSolution | None:
        """The most valuable widths whose predicted latency is at most ``budget_ms`` (None: none fits).

        Args:
            budget_ms: The latency budget under this knapsack's latency model.
            time_limit_s: Time the MILP on the reduced widths may take. Large spaces at tight
                budgets (ResNet-50 at 16 widths per group, under half its latency) need tens of
                seconds to prove optimality; within the limit the best widths found are returned
                with their certificate (``bound``, ``optimal``).
        """
        started = time.perf_counter()
        budget = float(budget_ms)
        # The search runs on the table, which equals the whole-model prediction to ~1e-13; it aims
        # a hair under the budget so that whatever it finds fits the whole-model prediction too.
        cap = budget - TABLE_SLACK * max(1.0, abs(budget))
        top = self.tree.decode(self.tree.collect(self._v)[0])
        if self.predict_ms(self._widths(top)) <= budget:  # the most valuable widths fit
            return self._finish(top, self.total_value(self._widths(top)), True, 0, started, budget)
        lowest = self.tree.decode(self.tree.collect([-c for c in self._c])[0])
        if self.predict_ms(self._widths(lowest)) > budget:
            return None  # even the lowest-latency widths do not fit
        pick, bound, lam = self._lagrangian(cap, lowest)
        pick = self._improve(pick, cap)
        value = self.total_value(self._widths(pick))
        tol = 1e-9 * max(1.0, abs(bound))
        if bound - value <= tol:
            return self._finish(pick, bound, True, 0, started, budget)
        # Exact reduction: a width whose max-marginal bound is below a feasible value is in no optimum.
        marg = self.tree.max_marginals([v - lam * c for v, c in zip(self._v, self._c, strict=True)])
        keep = {g: sorted({pick[g], *np.flatnonzero(marg[g] + lam * cap >= value - tol).tolist()}) for g in pick}
        reduced = self._reduced_milp(keep, cap, time_limit_s)
        if reduced is not None and self.total_value(self._widths(reduced[0])) > value:
            pick = reduced[0]
        optimal = reduced is not None and reduced[1]
        return self._finish(pick, bound, optimal, sum(len(k) for k in keep.values()), started, budget)

    def _lagrangian(self, budget: float, lowest: dict[str, int]) -> tuple[dict[str, int], float, float]:
        """Bisection on the multiplier: the best feasible maximiser met, the bound and its multiplier."""
        pick, bound, value, ms = self._dual(0.0, budget)
        lam_bound, best = 0.0, (self.total_value(self._widths(lowest)), lowest)
        lo, hi = 0.0, max(1e-12, value / max(ms, 1e-12))
        for _ in range(60):  # a multiplier whose maximiser fits
            pick, b, value, ms = self._dual(hi, budget)
            if b < bound:
                bound, lam_bound = b, hi
            if ms <= budget:
                best = max(best, (value, pick), key=lambda v: v[0])
                break
            lo, hi = hi, hi * 4.0
        for _ in range(100):  # bisection on the subgradient: budget - C(w_lam)
            if bound - best[0] <= 1e-9 * max(1.0, abs(bound)) or hi - lo <= 1e-12 * hi:
                break
            mid = 0.5 * (lo + hi)
            pick, b, value, ms = self._dual(mid, budget)
            if b < bound:
                bound, lam_bound = b, mid
            if ms <= budget:
                hi = mid
                best = max(best, (value, pick), key=lambda v: v[0])
            else:
                lo = mid
        return best[1], bound, lam_bound

    def _improve(self, pick: Mapping[str, int], budget: float) -> dict[str, int]:
        """Local search from ``pick``: the most valuable move of one or two groups that still fits.

        Moves change one group's width, or two groups' widths at once (one up, one down: the
        knapsack's exchange), to any of their choices; repeated until none adds value.
        """
        t = self.table
        names = list(self.choices)
        gid = np.concatenate([np.full(len(self.choices[g]), k) for k, g in enumerate(names)])
        offset = dict(zip(names, np.cumsum([0] + [len(self.choices[g]) for g in names[:-1]]).tolist(), strict=True))
        vals = np.concatenate([self._values[g] for g in names])
        cur = dict(pick)
        for _ in range(10 * len(names)):
            ms = t.predict_ms(self._widths(cur))
            dc = np.concatenate([t.unary[g] - t.unary[g][cur[g]] for g in names])
            dv = vals - np.concatenate([np.full(len(self.choices[g]), self._values[g][cur[g]]) for g in names])
            n = dc.size
            cross = np.zeros((n, n))
            for term in t.joint:
                at = tuple(cur[g] for g in term.groups)
                for j, g in enumerate(term.groups):  # the term with only g changed
                    line = term.ms[at[:j] + (slice(None),) + at[j + 1 :]]
                    dc[offset[g] : offset[g] + line.size] += line - term.ms[at]
                for (j, g), (k, h) in itertools.combinations(enumerate(term.groups), 2):  # g and h changed
                    idx: list[int | slice] = list(at)
                    idx[j], idx[k] = slice(None), slice(None)
                    both = term.ms[tuple(idx)]
                    fix = both - both[:, [at[k]]] - both[[at[j]], :] + term.ms[at]
                    cross[offset[g] : offset[g] + fix.shape[0], offset[h] : offset[h] + fix.shape[1]] += fix
            pair_c = dc[:, None] + dc[None, :] + cross + cross.T
            pair_v = dv[:, None] + dv[None, :]
            pair_v[gid[:, None] == gid[None, :]] = -np.inf
            pair_v[ms + pair_c > budget] = -np.inf
            single_v = np.where(ms + dc <= budget, dv, -np.inf)
            if max(pair_v.max(), single_v.max()) <= 1e-12:
                return cur
            if single_v.max() >= pair_v.max():
                moves = [int(np.argmax(single_v))]
            else:
                moves = [int(k) for k in np.unravel_index(int(np.argmax(pair_v)), pair_v.shape)]
            for m in moves:
                g = names[int(gid[m])]
                cur[g] = int(m) - offset[g]
        return cur

    def _reduced_milp(
        self, keep: Mapping[str, Sequence[int]], budget: float, time_limit_s: float
    ) -> tuple[dict[str, int], bool] | None:
        """:func:`solve_mckp` over the kept widths; ``(choice indices, solved to optimality)``."""
        t = self.table
        choices = {g: [t.choices[g][i] for i in keep[g]] for g in t.choices}
        cost = {g: {t.choices[g][i]: float(t.unary[g][i]) for i in keep[g]} for g in t.choices}
        joint = [JointTerm(j.groups, j.ms[np.ix_(*(keep[g] for g in j.groups))]) for j in t.joint]
        cliques, _ = junction_tree(list(choices), [j.groups for j in joint])
        tuples = sum(int(np.prod([len(keep[g]) for g in c])) for c in cliques)
        formulation: Literal["junction-tree", "local"] = "junction-tree" if tuples <= JUNCTION_TREE_TUPLES else "local"
        capacity = budget - t.constant
        for _ in range(3):  # HiGHS's tolerances can overshoot by ~1e-7 relative: tighten and retry
            found = _milp(choices, self.value, cost, capacity, joint, formulation, 1e-9, time_limit_s)
            if found is None:
                return None
            widths, solved = found
            ms = self.table.predict_ms(widths)
            if ms <= budget:
                return {g: t.choices[g].index(widths[g]) for g in t.choices}, solved
            capacity -= 2.0 * (ms - budget) + 1e-12 * abs(budget)
        return None

    def _finish(
        self, pick: Mapping[str, int], bound: float, optimal: bool, kept: int, started: float, budget: float
    ) -> KnapsackSolution | None:
        widths = self._widths(pick)
        ms = self.predict_ms(widths)
        if ms > budget:  # cannot happen: the table agrees with the model to far below TABLE_SLACK
            raise PruningError(
                f"the knapsack's widths predict {ms} ms, over the budget {budget} ms: a bug, please report"
            )
        value = self.total_value(widths)
        return KnapsackSolution(
            widths, ms, budget, value, max(bound, value), optimal, kept, time.perf_counter() - started
        )

    def sweep(self, budgets_ms: Sequence[float]) -> list[KnapsackSolution | None]:
        """:meth:`solve` for several budgets (None where nothing fits)."""
        return [self.solve(b) for b in budgets_ms]
