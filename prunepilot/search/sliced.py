"""The sliced scorer: bn-recal (and head-refit) accuracy of a candidate without pruning surgery.

``bn-recal`` scores a policy by pruning a copy of the base model (Torch-Pruning: trace,
plan, prune), recalibrating its batch norm on calibration batches and measuring accuracy on
held-out batches. :class:`SlicedScorer` computes the same figure on one copy of the base model
whose channels were reordered once, most important first
(:class:`~prunepilot.oneshot.supernet.Supernet`): at a policy's widths the copy runs on each
group's leading channels, which are the channels ``apply_policy`` keeps (same criterion, same
scores). Batch norm is recalibrated at those widths with the very
:func:`~prunepilot.pruning.recalibrate_bn` the pruned copy gets (statistics reset, cumulative
average, BN layers alone in train mode), and accuracy is
:func:`~prunepilot.training.evaluate_accuracy` on the same batches. Recalibration starts from
reset statistics every time, so no candidate's score depends on the ones scored before it.

What it cannot represent raises :class:`~prunepilot.oneshot.supernet.SupernetError` naming why:
models with layers the supernet does not support (grouped convolutions, concatenations,
LayerNorm over pruned channels, channels used outside conv/linear/BN layers), and criteria
with no single channel order (:data:`UNSLICEABLE`). :meth:`SlicedScorer.try_build` turns that
into a fallback reason; :meth:`SlicedScorer.try_accuracy` into None for one policy (prune it).
``apply_policy`` stays the path for the final model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from prunepilot.oneshot.supernet import Supernet, SupernetError
from prunepilot.pruning import PruningPolicy, PruningSpace, adapter, canonical_importance, recalibrate_bn
from prunepilot.pruning.selection import select_keep
from prunepilot.training import evaluate_accuracy

__all__ = ["UNSLICEABLE", "SlicedScorer"]

log = logging.getLogger(__name__)

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]

UNSLICEABLE: dict[str, str] = {
    "synflow": "ranks channels towards each policy's own widths (no single channel order)",
    "random": "draws new channels at every pruning (no single channel order)",
}
"""Criteria whose kept channels are not the leading ones of one fixed order, with why."""


#: Changes a model's weights in place and returns how to undo it.
Refit = Callable[[nn.Module], Callable[[], None]]


class SlicedScorer:
    """bn-recal accuracy of policies on a once-reordered copy of ``model`` (no pruning per policy).

    One supernet per criterion, built on first use (the evaluator's criterion by
    :meth:`try_build`; another only for a policy that asks for one). ``model`` is never modified.

    Attributes:
        model: The base model (eval mode).
        space: Its pruning space.
        importance: The default criterion (canonical name).
        calib: Batch-norm calibration batches (none: statistics are left as the base model's,
            as :func:`~prunepilot.pruning.prune_and_recalibrate` leaves them).
        val: Held-out batches accuracy is computed on.
    """

    def __init__(
        self,
        model: nn.Module,
        example: Any,
        space: PruningSpace,
        calib: Batches,
        val: Batches,
        importance: str = "l1",
    ) -> None:
        self.model, self.example, self.space = model, example, space
        self.calib, self.val = list(calib), list(val)
        self.importance = canonical_importance(importance)
        self._supernets: dict[str, Supernet] = {}
        self._scores: dict[str, dict[str, torch.Tensor]] = {}

    @classmethod
    def try_build(
        cls,
        model: nn.Module,
        example: Any,
        space: PruningSpace,
        calib: Batches,
        val: Batches,
        importance: str = "l1",
        protocol: str = "bn-recal",
    ) -> tuple[SlicedScorer | None, str | None]:
        """``(scorer, None)`` with its supernet built, or ``(None, reason)`` when it cannot be."""
        scorer = cls(model, example, space, calib, val, importance)
        try:
            scorer.supernet()
        except SupernetError as err:
            log.warning("%s scores by pruning, not slicing: %s", protocol, err)
            return None, str(err)
        return scorer, None

    def supernet(self, importance: str | None = None) -> Supernet:
        """The reordered copy for ``importance`` (default: :attr:`importance`), built once.

        Raises:
            SupernetError: the model or the criterion cannot be sliced (the message says why).
        """
        crit = canonical_importance(importance or self.importance)
        if crit in UNSLICEABLE:
            raise SupernetError(f"importance {crit!r} {UNSLICEABLE[crit]}")
        if crit not in self._supernets:
            try:
                sup = Supernet.build(
                    self.model, self.example, space=self.space, importance=crit, calib_batches=self.calib
                )
            except SupernetError:
                raise
            except Exception as err:  # the slimmed copy does not run (e.g. a forward reading layer attributes)
                raise SupernetError(f"the sliced copy of the model fails: {type(err).__name__}: {err}") from err
            self._supernets[crit] = sup
        return self._supernets[crit]

    def criterion(self, policy: PruningPolicy) -> str:
        """The criterion ``policy``'s channels are chosen by (any will do when no group is cut)."""
        full = self.space.full_widths()
        if all(int(policy.channels.get(n, c)) >= c for n, c in full.items()):
            return next(iter(self._supernets), self.importance)
        return canonical_importance(policy.importance)

    def accuracy(self, policy: PruningPolicy, refit: Refit | None = None) -> float:
        """Held-out accuracy at ``policy``'s widths after BN recalibration on :attr:`calib`.

        The figure ``evaluate_accuracy(prune_and_recalibrate(model, policy, ...), val)`` gives.
        ``refit``, when given, changes the recalibrated model's weights in place before it is
        scored (the head-refit protocol) and returns how to undo that; it is undone after.

        Raises:
            SupernetError: this policy cannot be sliced (its criterion, or a tie between
                channel scores at one of its cuts that ``apply_policy`` may break otherwise).
        """
        sup = self.supernet(self.criterion(policy))
        widths = {n: int(w) for n, w in policy.channels.items()}
        self._check_ties(sup, widths)
        with sup.at(widths):
            if self.calib:
                recalibrate_bn(sup.model, self.calib)
            undo = refit(sup.model.eval()) if refit is not None else None
            try:
                return float(evaluate_accuracy(sup.model, self.val))
            finally:
                if undo is not None:
                    undo()

    def try_accuracy(self, policy: PruningPolicy, refit: Refit | None = None) -> float | None:
        """:meth:`accuracy`, or None when this policy must be scored by pruning (logged)."""
        try:
            return self.accuracy(policy, refit)
        except Exception as err:  # prune it: a real failure of the policy fails there too
            log.debug("policy %s scored by pruning: %s: %s", policy.key(), type(err).__name__, err)
            return None

    def _check_ties(self, sup: Supernet, widths: dict[str, int]) -> None:
        """Raise if a tied group is cut where ``apply_policy``'s top-k keeps other channels."""
        cut = [g for g in sup.ties if g in sup.order and widths.get(g, len(sup.order[g])) < len(sup.order[g])]
        if not cut:
            return
        if sup.importance not in self._scores:
            self._scores[sup.importance] = adapter.group_scores(
                self.model, self.example, sup.importance, calib_batches=self.calib, ignored=self.space.ignored
            )
        scores = self._scores[sup.importance]
        for g in cut:
            k = widths[g]
            if set(select_keep(scores[g], k, 1)) != {int(i) for i in sup.order[g][:k]}:
                raise SupernetError(f"group {g!r}: tied channel scores at width {k}; apply_policy keeps others")
