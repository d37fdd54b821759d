"""The latency knapsack (HALP, Shen et al., NeurIPS 2022), solved exactly over the width lattice.

Choose one width per group to keep the most channel importance whose predicted latency fits:

    maximise   V(w) = sum_g value[g][w_g]       value: the summed importance of group g's top
    subject to C(w) <= budget                   w_g channels (importance order)

**Latency as group terms.** Every latency model here that predicts from layer shapes is a sum
over layers plus a constant: ``roofline`` (``scale * roofline_l + layer_overhead`` per layer,
``fixed_overhead_ms`` once), ``lut`` (``scale * table_l``, ``overhead_ms`` once), ``learned``
and the linear ``macs``/``params`` proxies. A layer's shape depends only on the groups its
input and output channels belong to (the space's cost records say which: exactly the sizes
:meth:`PruningSpace.layers` computes), so ``C(w) = constant + sum_g unary_g(w_g) + sum_T
T(w_T)`` with one :class:`JointTerm` ``T`` per set of two or more groups that some layers
depend on together (a conv reading group A and writing group B; all such convs share it).
:class:`LatencyTable` profiles these terms once and checks that they add up to the model's
whole-model prediction.

**Exact, not iterated.** HALP assumes each layer's input width, solves a separable knapsack and
iterates until the assumed widths equal the chosen ones, which can miss the optimum or
oscillate. Here a term's cost is taken at the widths chosen for *all* its groups, so that fixed
point holds by construction and the answer is the lattice optimum under the latency model.

**How it is solved** (:meth:`LatencyKnapsack.solve`):

1. *Lagrangian bound.* ``L(lam) = max_w V(w) - lam (C(w) - budget)`` is a max-sum problem on
   the groups' interaction graph, solved exactly by dynamic programming on a junction tree
   (:class:`CliqueTree`: residual networks have cliques of three groups). Bisection on
   ``lam`` gives a feasible ``w`` and ``min L``, an upper bound on any feasible value; a local
   search (one or two groups moved at a time) improves the feasible ``w``.
2. *Exact reduction.* Max-marginals of the same DP bound the best value with group ``g`` at
   width ``i``; widths whose bound is below the feasible value cannot be in the optimum and
   are dropped (Lagrangian variable fixing).
3. *MILP* on what remains, ``scipy.optimize.milp`` (HiGHS; :func:`solve_mckp`): binary ``x``
   per width, continuous ``mu`` per clique width tuple with marginals equal to the ``x`` (exact
   once ``x`` is integral), cliques agreeing on their separators; within ``time_limit_s``.

The answer is proven optimal when the bound is met or the MILP finishes (``optimal``); else it
is the best found, at most ``bound - value`` below the optimum. HiGHS is a well-kept
dependency we already have, but on the full lattice it is too slow for ResNet-50 (proving
optimality of even the *separable* knapsack with 37 groups x 16 widths takes over 20 s), hence
steps 1-2; a DP over discretised latency would be exact only for separable costs. Presolve is
off: HiGHS 1.12 (scipy 1.17) prints a raw debug line
(``HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();``, a ``printf`` no
option silences; gone from later HiGHS) whenever it repairs a solution of the presolved model,
and without presolve there is nothing to repair; on the reduced problems it costs little
(ResNet-50: equal to 1.5x the time).

**Value.** ``value[g][w]`` is the sum of group g's ``w`` highest scores: the channels
``apply_policy`` keeps at width ``w``. Loss-change estimates (``taylor``, the paper's;
``hessian``, ``snip``) are comparable across groups and used as they are; other criteria
(``l1``, ``l2``, ``bn-scale``, rank-based ones) have per-layer scales, so each group's scores are
divided by their total (full width is worth 1 in every group). See :func:`normalizes`.
"""

from __future__ import annotations

from prunepilot.search.knapsack.cliques import CliqueTree
from prunepilot.search.knapsack.latency_table import (
    LatencyTable,
    compute_records,
    group_values,
    normalizes,
    record_groups,
)
from prunepilot.search.knapsack.mckp import (
    JUNCTION_TREE_TUPLES,
    LOSS_CHANGE_CRITERIA,
    MAX_TERM_SIZE,
    TABLE_SLACK,
    JointTerm,
    junction_tree,
    solve_mckp,
)
from prunepilot.search.knapsack.solver import KnapsackSolution, LatencyKnapsack

__all__ = [
    "CliqueTree",
    "JUNCTION_TREE_TUPLES",
    "JointTerm",
    "KnapsackSolution",
    "LOSS_CHANGE_CRITERIA",
    "LatencyKnapsack",
    "LatencyTable",
    "MAX_TERM_SIZE",
    "TABLE_SLACK",
    "compute_records",
    "group_values",
    "junction_tree",
    "normalizes",
    "record_groups",
    "solve_mckp",
]
