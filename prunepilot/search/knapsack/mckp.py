"""Exact multiple-choice knapsack pieces: joint latency terms, their junction tree, and the MILP (HiGHS).

See :mod:`prunepilot.search.knapsack` for the formulation.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Widths = dict[str, int]

#: Criteria whose scores estimate the loss change of removing a channel: comparable across groups.
LOSS_CHANGE_CRITERIA = frozenset({"taylor", "hessian", "snip"})

#: Width tuples one term or clique may have; beyond, the choices per group must be thinned.
MAX_TERM_SIZE = 1 << 16

#: Relative amount under the budget the search on the table aims at (the table's rounding is ~1e-13).
TABLE_SLACK = 1e-9

#: Clique width tuples up to which the MILP uses the junction-tree formulation (tighter, larger LP).
JUNCTION_TREE_TUPLES = 20_000


@dataclass(frozen=True)
class JointTerm:
    """The summed latency of the layers whose shape depends on exactly these groups.

    Attributes:
        groups: Two or more group names, in space order.
        ms: Latency in ms, indexed by each group's choice index (shape: its choice counts).
        layers: The layers summed into it.
    """

    groups: tuple[str, ...]
    ms: np.ndarray
    layers: tuple[str, ...] = ()


def junction_tree(
    names: Sequence[str], terms: Sequence[Sequence[str]]
) -> tuple[list[tuple[str, ...]], list[tuple[int, int, tuple[str, ...]]]]:
    """Maximal cliques of a chordal completion of the groups' interaction graph, and a junction tree.

    Groups are joined when a term depends on both; eliminating groups in min-fill order (ties:
    fewest neighbours, then space order) adds the fill edges. Returns the cliques of two or
    more groups (in space order) and the tree's edges ``(i, j, separator)`` over them.
    """
    order = {g: k for k, g in enumerate(names)}
    adj: dict[str, set[str]] = {g: set() for g in names}
    for term in terms:
        for a, b in itertools.combinations(term, 2):
            adj[a].add(b)
            adj[b].add(a)
    left = set(names)
    found: list[frozenset[str]] = []

    def fill(g: str) -> int:
        nb = list(adj[g] & left)
        return sum(1 for a, b in itertools.combinations(nb, 2) if b not in adj[a])

    while left:
        g = min(left, key=lambda v: (fill(v), len(adj[v] & left), order[v]))
        nb = adj[g] & left
        for a, b in itertools.combinations(nb, 2):
            adj[a].add(b)
            adj[b].add(a)
        found.append(frozenset(nb | {g}))
        left.discard(g)
    maximal = [c for c in found if len(c) >= 2 and not any(c < d for d in found)]
    cliques = sorted({tuple(sorted(c, key=order.__getitem__)) for c in maximal}, key=lambda c: [order[g] for g in c])
    # A maximum-weight spanning tree (weight: shared groups) of a chordal graph's cliques is a junction tree.
    pairs = sorted(
        ((len(set(a) & set(b)), i, j) for (i, a), (j, b) in itertools.combinations(enumerate(cliques), 2)),
        key=lambda e: (-e[0], e[1], e[2]),
    )
    root = list(range(len(cliques)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    edges = []
    for w, i, j in pairs:
        if w and find(i) != find(j):
            root[find(i)] = find(j)
            edges.append((i, j, tuple(g for g in cliques[i] if g in cliques[j])))
    return cliques, edges


def solve_mckp(
    choices: Mapping[str, Sequence[int]],
    value: Mapping[str, Mapping[int, float]],
    cost: Mapping[str, Mapping[int, float]],
    capacity: float,
    *,
    joint: Sequence[JointTerm] = (),
    formulation: Literal["junction-tree", "local"] = "junction-tree",
    mip_rel_gap: float = 1e-9,
    time_limit_s: float = 60.0,
) -> Widths | None:
    """Exact multiple-choice knapsack: one width per group, total cost <= ``capacity``.

    Costs are ``cost[g][w]`` per group plus, optionally, ``joint`` terms over several groups.
    Binary ``x[g, i]`` choose the widths; every clique ``C`` of groups gets continuous
    ``mu[C, t]`` over its width tuples whose marginal on each group ``g`` of ``C`` is ``x[g]``,
    and every joint term's latency sits on a clique containing its groups. Once ``x`` is
    integral, ``mu`` is the indicator of the chosen tuple, so the latency row is exact. With
    ``formulation="local"`` the cliques are the terms themselves; ``"junction-tree"`` (default)
    uses the maximal cliques of a chordal completion (:func:`junction_tree`) and makes cliques
    agree on their separators, so the LP relaxation is the convex hull of the integral
    assignments cut by the latency row: on residual networks, whose terms form cycles, the
    local relaxation is loose and branch and bound many times slower.

    Returns the most valuable feasible widths, or None when no assignment fits (or the time
    limit passed without one).
    """
    found = _milp(choices, value, cost, capacity, joint, formulation, mip_rel_gap, time_limit_s)
    return None if found is None else found[0]


def _milp(
    choices: Mapping[str, Sequence[int]],
    value: Mapping[str, Mapping[int, float]],
    cost: Mapping[str, Mapping[int, float]],
    capacity: float,
    joint: Sequence[JointTerm],
    formulation: Literal["junction-tree", "local"],
    mip_rel_gap: float,
    time_limit_s: float,
) -> tuple[Widths, bool] | None:
    """:func:`solve_mckp`, and whether HiGHS proved the widths optimal."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_array

    names = list(choices)
    opts = {g: [int(w) for w in choices[g]] for g in names}
    if formulation == "local":
        cliques = sorted({t.groups for t in joint}, key=lambda c: [names.index(g) for g in c])
        edges: list[tuple[int, int, tuple[str, ...]]] = []
    else:
        cliques, edges = junction_tree(names, [t.groups for t in joint])
    dims = [tuple(len(opts[g]) for g in c) for c in cliques]
    start: dict[str, int] = {}
    n = 0
    for g in names:
        start[g] = n
        n += len(opts[g])
    nx = n
    mu0 = []
    for d in dims:
        mu0.append(n)
        n += int(np.prod(d))
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []

    def put(r: np.ndarray, c: np.ndarray, v: float) -> None:
        rows.append(np.asarray(r, dtype=np.int64))
        cols.append(np.asarray(c, dtype=np.int64))
        vals.append(np.full(np.shape(c), v, dtype=float))

    for r, g in enumerate(names):  # one width per group
        put(np.full(len(opts[g]), r), start[g] + np.arange(len(opts[g])), 1.0)
    r = len(names)
    for c, d, z0 in zip(cliques, dims, mu0, strict=True):  # each clique's marginals are the x
        flat = np.arange(int(np.prod(d)))
        idx = np.unravel_index(flat, d)
        for j, g in enumerate(c):
            put(r + idx[j], z0 + flat, 1.0)
            put(r + np.arange(d[j]), start[g] + np.arange(d[j]), -1.0)
            r += d[j]
    for i, k, sep in edges:  # neighbouring cliques agree on their separator's joint marginal
        if len(sep) < 2:
            continue  # a single shared group: already tied through its x
        sep_dims = tuple(len(opts[g]) for g in sep)
        for q, sign in ((i, 1.0), (k, -1.0)):
            flat = np.arange(int(np.prod(dims[q])))
            idx = np.unravel_index(flat, dims[q])
            at = np.ravel_multi_index(tuple(idx[cliques[q].index(g)] for g in sep), sep_dims)
            put(r + at, mu0[q] + flat, sign)
        r += int(np.prod(sep_dims))
    n_eq = r
    lat = np.zeros(n)
    for g in names:
        lat[start[g] : start[g] + len(opts[g])] = [cost[g][w] for w in opts[g]]
    for term in joint:  # on the smallest clique that holds the term's groups
        q = min((q for q, c in enumerate(cliques) if set(term.groups) <= set(c)), key=lambda q: len(cliques[q]))
        flat = np.arange(int(np.prod(dims[q])))
        idx = np.unravel_index(flat, dims[q])
        lat[mu0[q] + flat] += term.ms[tuple(idx[cliques[q].index(g)] for g in term.groups)]
    scale = max(float(np.abs(lat).max(initial=0.0)), abs(capacity), 1e-12)
    nz = np.flatnonzero(lat)
    rows.append(np.full(nz.size, n_eq, dtype=np.int64))
    cols.append(nz)
    vals.append(lat[nz] / scale)
    a = coo_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_eq + 1, n)).tocsr()
    lower = np.concatenate([np.ones(len(names)), np.zeros(n_eq - len(names)), [-np.inf]])
    upper = np.concatenate([np.ones(len(names)), np.zeros(n_eq - len(names)), [capacity / scale]])
    obj = np.zeros(n)
    obj[:nx] = [-float(value[g][w]) for g in names for w in opts[g]]
    obj /= max(float(np.abs(obj).max(initial=0.0)), 1e-12)
    integrality = np.concatenate([np.ones(nx), np.zeros(n - nx)])
    res = milp(
        obj,
        constraints=LinearConstraint(a, lower, upper),
        integrality=integrality,
        bounds=Bounds(0.0, 1.0),
        options={"presolve": False, "mip_rel_gap": mip_rel_gap, "time_limit": time_limit_s},  # see module docs
    )
    if res.x is None:
        return None
    x = res.x
    return {g: opts[g][int(np.argmax(x[start[g] : start[g] + len(opts[g])]))] for g in names}, res.status == 0
