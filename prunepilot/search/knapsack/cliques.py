"""Max-sum dynamic programming on the junction tree of the groups (the Lagrangian bound).

See :mod:`prunepilot.search.knapsack` for the formulation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from prunepilot.errors import PruningError
from prunepilot.search.knapsack.mckp import (
    MAX_TERM_SIZE,
    junction_tree,
)

Widths = dict[str, int]


class CliqueTree:
    """A junction tree over the groups, for exact max-sum dynamic programming.

    Args:
        names: The groups, in space order.
        dims: Choices per group.
        terms: The group sets of the joint terms (each ends up inside one clique).
    """

    def __init__(self, names: Sequence[str], dims: Mapping[str, int], terms: Sequence[tuple[str, ...]]) -> None:
        cliques, edges = junction_tree(names, terms)
        covered = {g for c in cliques for g in c}
        cliques += [(g,) for g in names if g not in covered]
        for c in cliques:
            size = int(np.prod([dims[g] for g in c]))
            if size > MAX_TERM_SIZE:
                raise PruningError(
                    f"groups {list(c)} interact through their layers and have {size} width combinations together "
                    f"(more than {MAX_TERM_SIZE}); give the knapsack fewer width choices per group (max_choices)"
                )
        self.names, self.dims, self.cliques = tuple(names), dict(dims), cliques
        adj: dict[int, list[tuple[int, tuple[str, ...]]]] = {i: [] for i in range(len(cliques))}
        for i, j, sep in edges:
            adj[i].append((j, sep))
            adj[j].append((i, sep))
        self.parent = [-1] * len(cliques)
        self.sep: list[tuple[str, ...]] = [()] * len(cliques)
        self.component = [-1] * len(cliques)
        self.order: list[int] = []  # breadth first: every clique after its parent
        for root in range(len(cliques)):
            if self.component[root] >= 0:
                continue
            self.component[root] = root
            queue = [root]
            while queue:
                i = queue.pop(0)
                self.order.append(i)
                for j, sep in adj[i]:
                    if self.component[j] < 0:
                        self.component[j], self.parent[j], self.sep[j] = root, i, sep
                        queue.append(j)

    def home(self, groups: Sequence[str]) -> int:
        """The smallest clique holding all of ``groups``."""
        want = set(groups)
        return min((i for i, c in enumerate(self.cliques) if want <= set(c)), key=lambda i: len(self.cliques[i]))

    def _expand(self, arr: np.ndarray, sub: Sequence[str], clique: Sequence[str]) -> np.ndarray:
        """``arr`` over ``sub`` (a subset, same order) shaped to broadcast over ``clique``."""
        return arr.reshape([self.dims[g] if g in sub else 1 for g in clique])

    @staticmethod
    def _max_to(arr: np.ndarray, clique: Sequence[str], sub: Sequence[str]) -> np.ndarray:
        axes = tuple(k for k, g in enumerate(clique) if g not in sub)
        return arr.max(axis=axes) if axes else arr

    def potential(
        self, unary: Mapping[str, np.ndarray], joint: Sequence[tuple[tuple[str, ...], np.ndarray]]
    ) -> list[np.ndarray]:
        """Per-clique arrays summing ``unary`` (per group) and ``joint`` (per group set) terms."""
        out = [np.zeros([self.dims[g] for g in c]) for c in self.cliques]
        for g, arr in unary.items():
            q = self.home((g,))
            out[q] = out[q] + self._expand(np.asarray(arr, dtype=float), (g,), self.cliques[q])
        for groups, arr in joint:
            q = self.home(groups)
            out[q] = out[q] + self._expand(np.asarray(arr, dtype=float), groups, self.cliques[q])
        return out

    def collect(self, theta: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray], float]:
        """Leaves-to-root max-sum: subtree beliefs, upward messages and the maximum."""
        belief = [t.copy() for t in theta]
        up: list[np.ndarray] = [np.zeros(0)] * len(theta)
        for i in reversed(self.order):
            p = self.parent[i]
            if p >= 0:
                up[i] = self._max_to(belief[i], self.cliques[i], self.sep[i])
                belief[p] = belief[p] + self._expand(up[i], self.sep[i], self.cliques[p])
        total = sum(float(belief[i].max()) for i in self.order if self.parent[i] < 0)
        return belief, up, total

    def decode(self, belief: Sequence[np.ndarray]) -> dict[str, int]:
        """The maximising choice index per group, from :meth:`collect`'s beliefs."""
        pick: dict[str, int] = {}
        for i in self.order:
            c = self.cliques[i]
            sub = belief[i][tuple(pick[g] if g in pick else slice(None) for g in c)]
            free = [g for g in c if g not in pick]
            if free:
                at = np.unravel_index(int(np.argmax(sub)), sub.shape)
                pick.update((g, int(k)) for g, k in zip(free, at, strict=True))
        return pick

    def max_marginals(self, theta: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Per group and choice: the maximum of the summed potentials with that group at that choice."""
        belief, up, total = self.collect(theta)
        full: list[np.ndarray] = [np.zeros(0)] * len(theta)
        for i in self.order:
            p = self.parent[i]
            if p < 0:
                full[i] = belief[i]
                continue
            rest = full[p] - self._expand(up[i], self.sep[i], self.cliques[p])
            down = self._max_to(rest, self.cliques[p], self.sep[i])
            full[i] = belief[i] + self._expand(down, self.sep[i], self.cliques[i])
        comp_max = {i: float(belief[i].max()) for i in self.order if self.parent[i] < 0}
        out = {}
        for g in self.names:
            q = self.home((g,))
            others = total - comp_max[self.component[q]]
            out[g] = self._max_to(full[q], self.cliques[q], (g,)) + others
        return out
