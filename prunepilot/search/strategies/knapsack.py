"""``knapsack``: the latency knapsack (HALP), one solve per budget, every answer scored.

One session trial: score every group's channels once with the search's criterion (Taylor is
the paper's; calibration batches for data-dependent criteria), profile the latency of every
layer at every width combination of the groups it depends on, and solve
(:class:`~prunepilot.search.knapsack.LatencyKnapsack`) for the budget times ``margin`` and for
each fraction in ``sweep``. Each solution is evaluated by the evaluator like any candidate and
reported with the knapsack's own figures beside it (``knapsack_predicted_ms``, ``knapsack_value``,
``knapsack_bound``, ``knapsack_optimal``). The method is deterministic: one trial, whatever
``trials`` says; ``evaluations`` caps the number of budgets solved (the budget's point first).

**Which latency it solves with** (``knapsack_latency`` in every record), always *predicted*:

* the evaluator's own latency model when it predicts from layer shapes (``roofline``, ``lut``,
  ``learned``, ``macs``...): the knapsack's prediction is then the candidate's latency;
* on measured devices with an in-loop lookup table (``evaluation.in_loop_predictor: lut``, the
  default): that table, calibrated on the device at search start, the figure every candidate's
  in-loop latency is;
* on other measured devices, the evaluator's budget-check predictor ``predict_latency_ms`` (the
  driver's :class:`~prunepilot.search.evaluator.LatencyFit`, ``a + b MACs + c bytes`` fitted on
  measured uniformly pruned models), recovered here by least squares on lattice probes as a
  :class:`LinearLayerLatency`: a model's MACs and bytes are sums over its layers, so it is
  layer-additive; the fit's largest residual is recorded (0 up to rounding when the evaluator's
  predictor has this form). The same predictor every other strategy checks budgets with;
  ``margin`` absorbs its error against the measurements.

Example config::

    strategy:
      name: knapsack
      evaluations: 5
      settings: {max_choices: 16, margin: 0.95, sweep: [0.6, 0.7, 0.8, 0.9]}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from prunepilot.hw_models.base import LatencyModel, LatencyResult
from prunepilot.oneshot.widths import WidthGrid
from prunepilot.pruning import PruningSpace
from prunepilot.pruning.adapter import DATA_DEPENDENT, canonical_importance, group_scores
from prunepilot.pruning.layers import LayerShape
from prunepilot.search.knapsack import LatencyKnapsack, normalizes
from prunepilot.search.knapsack.sensitivity import sensitivity_values
from prunepilot.search.space import Grid
from prunepilot.search.strategies.base import Strategy, StrategySettings, register_strategy
from prunepilot.search.strategies.context import DriverContext, TrialContext, TuneSetup

log = logging.getLogger(__name__)


class LinearLayerLatency(LatencyModel):
    """Predicted: ``intercept + ms_per_mac * MACs + ms_per_byte * bytes``, summed over layers.

    The form of the evaluator's :class:`~prunepilot.search.evaluator.LatencyFit`; :meth:`fit_to`
    recovers it from any ``widths -> ms`` predictor. Fitted at one batch size: ``batch_size``
    is ignored.
    """

    name = "linear-fit"
    requires_model = False

    def __init__(self, intercept: float, ms_per_mac: float, ms_per_byte: float, residual_ms: float = 0.0) -> None:
        self.intercept, self.ms_per_mac, self.ms_per_byte = float(intercept), float(ms_per_mac), float(ms_per_byte)
        #: Largest error of the fit on its probe widths (0 when the predictor has this form).
        self.residual_ms = float(residual_ms)

    def predict_layers(self, layers: Sequence[LayerShape], batch_size: int = 1) -> LatencyResult:
        ms = self.intercept + sum(self.ms_per_mac * s.macs + self.ms_per_byte * s.bytes for s in layers)
        return LatencyResult(ms=ms, kind="predicted", model_name=self.name, details={"unit": "ms"})

    @classmethod
    def fit_to(
        cls, space: PruningSpace, predict: Callable[[Mapping[str, int]], float], probes: Sequence[Mapping[str, int]]
    ) -> LinearLayerLatency:
        """Least squares of ``predict(w)`` on ``[1, MACs(w), bytes(w)]`` over ``probes`` (at least 3)."""
        feats, ys = [], []
        for widths in probes:
            layers = space.layers(widths)
            feats.append([1.0, float(sum(s.macs for s in layers)), float(sum(s.bytes for s in layers))])
            ys.append(float(predict(widths)))
        a, y = np.asarray(feats), np.asarray(ys)
        scale = np.where(np.abs(a).max(axis=0) > 0, np.abs(a).max(axis=0), 1.0)
        coef = np.linalg.lstsq(a / scale, y, rcond=None)[0] / scale
        return cls(float(coef[0]), float(coef[1]), float(coef[2]), float(np.abs(a @ coef - y).max()))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "intercept": self.intercept, "ms_per_mac": self.ms_per_mac,
                "ms_per_byte": self.ms_per_byte, "residual_ms": self.residual_ms}  # fmt: skip


def thin(widths: Sequence[int], at_most: int) -> tuple[int, ...]:
    """At most ``at_most`` of ``widths`` (ascending), evenly spaced, always the smallest and the largest."""
    if len(widths) <= at_most:
        return tuple(widths)
    picks = np.unique(np.round(np.linspace(0, len(widths) - 1, at_most)).astype(int))
    return tuple(int(widths[i]) for i in picks)


def knapsack_latency(
    ctx: TrialContext, choices: Mapping[str, Sequence[int]]
) -> tuple[LatencyModel, int, dict[str, Any]]:
    """The layer-additive latency model to solve with, its batch size, and what to record about it."""
    model = getattr(ctx.evaluator, "latency", None)
    batch = int(getattr(ctx.evaluator, "batch_size", 1))
    if isinstance(model, LatencyModel) and not model.requires_model:
        return model, batch, {"knapsack_latency": model.name}
    in_loop = getattr(ctx.evaluator, "in_loop", None)
    if isinstance(in_loop, LatencyModel) and getattr(in_loop, "kind", None) == "lut":
        # the calibrated lookup table the candidates' in-loop latency comes from: a sum over layers
        return in_loop, batch, {"knapsack_latency": f"in-loop {getattr(in_loop, 'label', in_loop.name)}"}
    gen = np.random.default_rng(ctx.seed)
    probes = [{g: c[0] for g, c in choices.items()}, {g: c[-1] for g, c in choices.items()}]
    probes += [{g: c[len(c) // 2] for g, c in choices.items()}]
    probes += [{g: c[int(gen.integers(len(c)))] for g, c in choices.items()} for _ in range(6)]
    fit = LinearLayerLatency.fit_to(ctx.space, ctx.predict_latency_ms, probes)
    return fit, 1, {"knapsack_latency": "evaluator-fit (MACs + bytes)", "knapsack_fit_residual_ms": fit.residual_ms}


class KnapsackSettings(StrategySettings):
    """Settings of ``knapsack``."""

    max_choices: int = Field(16, ge=2, description="Widths per group the knapsack chooses among (evenly thinned).")
    margin: float = Field(
        0.95, gt=0, le=1, description="The budget's point is solved for budget x margin (absorbs predictor error)."
    )
    sweep: list[float] = Field(
        default_factory=lambda: [0.6, 0.7, 0.8, 0.9],
        description="Further budgets to solve for, as fractions of the latency budget (the front).",
    )
    normalize: bool | None = Field(
        None,
        description="Divide each group's scores by their total; None: for criteria whose scale differs "
        "between layers (all but taylor, hessian, snip).",
    )
    time_limit_s: float = Field(
        0.5, gt=0, description="Seconds the exact MILP step may take per budget (best found is kept beyond)."
    )
    value: Literal["importance", "sensitivity"] = Field(
        "importance",
        description="What a group's width is worth: importance (HALP: the summed criterion scores of the channels "
        "kept) or sensitivity (the held-out accuracy, BN recalibrated, with only that group pruned to that width; "
        "one evaluation per group and width, once per search; prunepilot/search/knapsack/sensitivity.py).",
    )


@register_strategy
class KnapsackStrategy(Strategy):
    """HALP's latency knapsack over the width lattice, solved exactly under a layer-additive latency model."""

    name = "knapsack"
    kind = "session"
    description = "latency knapsack (HALP): most channel importance per latency, budget and a sweep of budgets"
    Settings = KnapsackSettings
    settings: KnapsackSettings

    def tune_setup(self, ctx: DriverContext) -> TuneSetup:
        return TuneSetup({"trial_index": Grid([0])}, num_samples=1)  # deterministic: one trial

    def run_trial(self, ctx: TrialContext, params: Mapping[str, Any]) -> None:
        s = self.settings
        grid = WidthGrid.from_space(ctx.space, ctx.lower_bound, ctx.round_to)
        choices = {g: thin(c, s.max_choices) for g, c in grid.choices.items()}
        started = time.perf_counter()
        crit = canonical_importance(ctx.importance)
        if s.value == "sensitivity":
            scores, values = None, sensitivity_values(ctx.evaluator, ctx.space, choices, ctx.importance)
        else:
            calib = list(ctx.calib_batches) if crit in DATA_DEPENDENT else None
            scores = group_scores(ctx.base_model, ctx.example, crit, calib_batches=calib, ignored=ctx.space.ignored)
            values = None
        score_seconds = time.perf_counter() - started
        latency, batch_size, source = knapsack_latency(ctx, choices)
        normalize = normalizes(crit) if s.normalize is None else s.normalize
        knapsack = LatencyKnapsack(
            ctx.space, choices, scores, latency, batch_size=batch_size, normalize=normalize, values=values
        )
        timings = {"score_seconds": score_seconds, "table_seconds": knapsack.table.seconds}
        targets = [s.margin, *s.sweep][: max(1, ctx.evaluations)]
        lowest = knapsack.predict_ms({g: c[0] for g, c in choices.items()})
        seen: set[tuple[int, ...]] = set()
        for fraction in targets:
            # a budget at the floor: the margin must not push the target below what the floor reaches
            target = max(ctx.budget_ms * fraction, lowest) if lowest <= ctx.budget_ms else ctx.budget_ms * fraction
            sol = knapsack.solve(target, time_limit_s=s.time_limit_s)
            if sol is None:
                log.warning("knapsack: no widths fit %.4g ms under %s", target, source["knapsack_latency"])
                continue
            key = grid.key(sol.widths)
            if key in seen:
                continue
            seen.add(key)
            policy = grid.policy(ctx.space, sol.widths, ctx.importance, strategy=self.name, budget_fraction=fraction)
            metrics = ctx.evaluator.evaluate(policy)
            extra = {
                "knapsack_value_kind": s.value,
                "budget_fraction": fraction,
                "knapsack_budget_ms": target,
                "knapsack_predicted_ms": sol.predicted_ms,
                "knapsack_value": sol.value,
                "knapsack_bound": sol.bound,
                "knapsack_optimal": sol.optimal,
                "solve_seconds": sol.seconds,
                **source,
                **timings,
            }
            ctx.report(policy, metrics, extra)
        if not seen:
            raise ValueError(
                f"the knapsack found no widths within {ctx.budget_ms * max(targets):.4g} ms under "
                f"{source['knapsack_latency']} (its smallest widths predict {lowest:.4g} ms); raise the budget "
                "or the strategy's margin/sweep, or lower evaluation.lower_bound"
            )
