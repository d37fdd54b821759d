"""The strategy contract: what a strategy is given (and all it may use), in both backends.

* :class:`DriverContext` -> ``Strategy.tune_setup`` -> :class:`TuneSetup` (the trials to run:
  a parameter space of :mod:`prunepilot.search.space` domains, a count, optionally an Optuna
  sampler), before any trial starts;
* :class:`TrialContext` -> ``Strategy.run_trial``: one trial's budget, seed, data, model and an
  evaluator behind the :class:`PolicyEvaluator` protocol, and ``report`` for every candidate.

With ``device.also`` a trial also gets each other device's budget and latency estimate
(:class:`DeviceTarget`); :meth:`TrialContext.aim` hands strategies the devices' budgets in turn.

This module imports neither the search config nor the concrete evaluator (which imports the
config), so strategies depend on the protocol alone: ``config -> strategies`` is the only way
round, and any object with these four methods can drive a strategy (tests, benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import DataLoader

from prunepilot.hw_models.base import LatencyModel
from prunepilot.pruning import PruningPolicy, PruningSpace
from prunepilot.search.records import Metrics
from prunepilot.search.space import ParamSpace

Batch = tuple[torch.Tensor, torch.Tensor]
"""One ``(inputs, labels)`` batch."""

ReportFn = Callable[[PruningPolicy, Metrics, Mapping[str, Any]], None]
"""``report(policy, metrics, extra)``: one candidate; ``extra`` holds the strategy's own fields."""


@runtime_checkable
class PolicyEvaluator(Protocol):
    """What a strategy may ask of the evaluator (:class:`prunepilot.search.evaluator.Evaluator`)."""

    #: The device's latency model (predicted ones answer from layer shapes; measured ones time models).
    latency: LatencyModel
    #: The batch size latency is measured or predicted at.
    batch_size: int

    def make_policy(
        self, ratios: Mapping[str, float] | Sequence[float], removed_blocks: Sequence[str] = (), **metadata: Any
    ) -> PruningPolicy:
        """A policy from keep ratios (and blocks to remove), with the search's rounding and channel criterion."""
        ...

    def evaluate(self, policy: PruningPolicy) -> Metrics:
        """Prune the base model, recalibrate BN, score accuracy and latency (cached by policy)."""
        ...

    def recalibrated_accuracy(self, policy: PruningPolicy) -> float:
        """Held-out accuracy after BN recalibration alone, whatever the protocol (sensitivity analysis)."""
        ...

    def score(
        self,
        model: nn.Module,
        widths: Mapping[str, int],
        *,
        started: float | None = None,
        accuracy: float | None = None,
        protocol: str | None = None,
    ) -> Metrics:
        """Score an already-built model with these widths (e.g. one-shot weights) like :meth:`evaluate`;
        ``protocol`` names how its weights were obtained (the record's ``metrics.protocol``)."""
        ...

    def predict_latency_ms(self, widths: Mapping[str, int], removed_blocks: Sequence[str] = ()) -> float:
        """A fast (< 1 ms) latency estimate, at ``widths`` without ``removed_blocks``, for budget checks
        inside search loops."""
        ...


@dataclass(frozen=True)
class TuneSetup:
    """The trials a strategy asks for (run by Ray Tune or, serially, by the local backend).

    Attributes:
        param_space: Trial parameters: :class:`~prunepilot.search.space.Uniform`,
            :class:`~prunepilot.search.space.Grid` or constants.
        num_samples: Samples of the space (each times every grid variant).
        sampler: An Optuna sampler proposing the uniform parameters, told each trial's
            ``metric`` (None: drawn at random). The Ray backend wraps it in Tune's
            ``OptunaSearch``; the local backend asks and tells an Optuna study itself.
        metric: The trial result(s) the sampler optimises (``score``, ``accuracy``, ``latency_ms``).
        mode: ``max`` or ``min`` per metric.
    """

    param_space: ParamSpace
    num_samples: int
    sampler: Any = None
    metric: str | list[str] | None = None
    mode: str | list[str] | None = None


@dataclass(frozen=True)
class DriverContext:
    """What the driver knows when it sets a strategy up.

    ``depth`` (``evaluation.depth``): the strategy also proposes which of ``space.blocks`` to
    remove (only strategies with ``searches_depth`` are set up with it). ``also``
    (``device.also``): the other devices whose budgets proposals may be aimed at in turn
    (:meth:`TrialContext.aim`); empty: the search's own device only.
    """

    space: PruningSpace
    budget_ms: float
    lower_bound: float
    evaluations: int
    trials: int
    seed: int
    base_latency_ms: float
    depth: bool = False
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceTarget:
    """A budget a proposal can be aimed at: the search's own, or one of ``device.also`` with that
    device's own latency estimate (:meth:`TrialContext.aim`)."""

    device: str | None
    """The device (None: the search's own, ``device.name``)."""
    budget_ms: float
    """The budget to aim at there: the search's budget as the same share of the base's latency on
    that device, less its margin (``evaluation.budget_margin``), never below its reachable minimum."""
    predict_latency_ms: Callable[[Mapping[str, int], Sequence[str]], float]
    """A fast (< 1 ms) latency estimate on that device at ``widths`` without ``removed_blocks``."""


@dataclass(frozen=True)
class TrialContext:
    """What a trial gives its strategy: everything it may read, typed, and a way to report.

    Attributes:
        evaluator: Scores policies (:class:`PolicyEvaluator`).
        report: Hand one evaluated candidate to the driver.
        space: The prunable groups of the base model.
        base_model: The unpruned model (eval mode; never modify it).
        example: An example input ``(1, C, H, W)``.
        budget_ms: The search's latency budget.
        base_latency_ms: The base model's latency (for budgets given as fractions).
        lower_bound: Smallest keep ratio a strategy may propose.
        round_to: Widths are rounded to multiples of this.
        importance: The channel-selection criterion of every policy.
        evaluations: Candidates to evaluate (per trial for session strategies).
        seed: This trial's seed (the search's seed plus ``trial_index``).
        trial_id: This trial's id.
        calib_batches: Batches for BN recalibration (from the training split).
        val_batches: Held-out batches candidates are scored on.
        train_loader: The training split, for strategies that train (one-shot supernets).
        work_dir: Where a strategy keeps its own checkpoints (the model cache folder).
        evaluator_key: Hash of what determines the evaluator (model, data, device, evaluation,
            seed): part of checkpoint names, so a changed setup never resumes a stale one.
        targets: The budgets of ``device.also``'s devices (in its order), each with that device's
            latency estimate, that proposals may be aimed at (:meth:`aim`); empty without.
    """

    evaluator: PolicyEvaluator
    report: ReportFn
    space: PruningSpace
    base_model: nn.Module
    example: torch.Tensor
    budget_ms: float
    base_latency_ms: float
    lower_bound: float
    round_to: int
    importance: str
    evaluations: int
    seed: int
    trial_id: str
    calib_batches: Sequence[Batch]
    val_batches: Sequence[Batch]
    train_loader: DataLoader[Any] | None
    work_dir: Path
    evaluator_key: str
    targets: tuple[DeviceTarget, ...] = ()

    def aim(self, turn: int) -> DeviceTarget:
        """The budget proposal ``turn`` aims at: the search's own device and then each of
        ``device.also`` in turn (``turn`` modulo their number); always the search's own budget
        (``budget_ms``, :meth:`predict_latency_ms`) without ``device.also``.

        Strategies that project proposals into the budget (``random``, ``optuna-tpe``) use it so
        that a search on several devices proposes candidates near every device's budget, not only
        where its own budget maps to on the others.
        """
        own = DeviceTarget(None, self.budget_ms, self.predict_latency_ms)
        return (own, *self.targets)[turn % (1 + len(self.targets))]

    def predict_latency_ms(self, widths: Mapping[str, int], removed_blocks: Sequence[str] = ()) -> float:
        """The evaluator's fast latency estimate (budget checks), without ``removed_blocks``."""
        return self.evaluator.predict_latency_ms(widths, removed_blocks)

    def make_policy(
        self, ratios: Mapping[str, float] | Sequence[float], removed_blocks: Sequence[str] = (), **metadata: Any
    ) -> PruningPolicy:
        """The evaluator's policy from keep ratios, removing ``removed_blocks``."""
        return self.evaluator.make_policy(ratios, removed_blocks, **metadata)
