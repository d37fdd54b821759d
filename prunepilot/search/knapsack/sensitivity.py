"""Measured per-group sensitivity: the knapsack's values when channel importance is not enough.

Channel importance says which channels of a group to keep; it says little about *how many*:
summed magnitude grows about linearly with the width in most layers, so a knapsack on it spends
the whole budget on a few groups and sends the others to the floor. Sensitivity analysis (Li et
al., ICLR 2017, section 4.2; NetAdapt's empirical per-layer measurements, Yang et al., ECCV 2018)
measures it instead: prune one group to each candidate width, keep every other group whole,
recalibrate BN and score on the held-out batches (:meth:`Evaluator.recalibrated_accuracy`; one
group pruned leaves the network's statistics close enough for recalibration to be a fair
score, unlike a whole model at half its latency). ``value[g][w]`` is that accuracy, made
non-decreasing in ``w`` (a narrower width is never worth more than a wider one: differences
below that are noise of the held-out sample). The knapsack then maximises the sum of these
accuracies, the usual additive approximation of the joint effect.

Cost: one BN-recalibrated evaluation per group and width below full (``sum_g (choices_g - 1)``),
once per search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from prunepilot.pruning import PruningPolicy, PruningSpace


class RecalibratedScorer(Protocol):
    """What sensitivity needs of an evaluator: the BN-recalibrated accuracy of a policy."""

    def recalibrated_accuracy(self, policy: PruningPolicy) -> float: ...


def sensitivity_values(
    scorer: RecalibratedScorer,
    space: PruningSpace,
    choices: Mapping[str, Sequence[int]],
    importance: str,
) -> dict[str, dict[int, float]]:
    """``value[g][w]``: held-out accuracy with only group ``g`` pruned to ``w`` (BN recalibrated),
    non-decreasing in ``w``; the full width is the unpruned model's accuracy."""
    full = space.full_widths()
    base = scorer.recalibrated_accuracy(PruningPolicy.from_widths(space, full, importance=importance))
    out: dict[str, dict[int, float]] = {}
    for g, widths in choices.items():
        best = 0.0
        out[g] = {}
        for w in sorted(int(x) for x in widths):
            if w >= full[g]:
                acc = base
            else:
                acc = scorer.recalibrated_accuracy(
                    PruningPolicy.from_widths(space, {**full, g: w}, importance=importance)
                )
            best = max(best, acc)
            out[g][w] = best
    return out
