"""The in-loop latency predictor of a measured device, calibrated once when the search starts.

Timing every candidate on a measured device (``torch-cpu``...) is slow and noisy. With
``evaluation.in_loop_latency: predicted`` (the default) the driver calibrates one predictor
before any trial (:func:`prepare_in_loop`), and every in-loop candidate's latency and every
strategy's budget check come from it (``latency_kind`` ``predicted``, ``latency_model`` naming
both, e.g. ``torch-cpu~lut``):

* ``lut`` (``evaluation.in_loop_predictor``): a lookup table of this model's layer types profiled
  on this device (:func:`~prunepilot.hw_models.lut_profile.profile_layers`, a short protocol with
  the device's own threads and clock), its scale and overhead fitted to the whole model measured
  at the uniform widths :meth:`Evaluator.calibrate_fit` measured already (nothing twice);
* ``fit``: that calibrate_fit's :class:`LatencyFit` on MACs and bytes; also the fallback, with the
  reason recorded, when the latency model is not torch eager on this CPU or the model has a layer
  a table cannot hold.

A few random policies are then measured as held-out check points. The predictor's relative error
on fit and check points is the calibration record (``run.json``: ``in_loop_latency``) and sizes
the margin strategies keep (``evaluation.budget_margin``): they aim at ``budget / (1 + margin)``,
never below the predicted reachable minimum. ``auto`` is the largest under-prediction
(``measured / predicted - 1``, the direction that puts a candidate over the budget) on those
points, at most :data:`MAX_AUTO_MARGIN`.

The predictor is JSON (:meth:`InLoopPredictor.to_json`): the driver ships it to Ray trials in the
``SearchSetup``, which never profile. At the end every front point and the best candidate within
the budget are measured (:mod:`prunepilot.search.remeasure`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from prunepilot.hw_models.base import HardwareError, LatencyModel, LatencyResult
from prunepilot.hw_models.lut import LookupTable, LutLatency
from prunepilot.hw_models.measure import MeasureProtocol
from prunepilot.pruning import PruningPolicy
from prunepilot.pruning.layers import LayerShape
from prunepilot.search.evaluator import LatencyFit

if TYPE_CHECKING:
    from prunepilot.search.config import SearchConfig
    from prunepilot.search.evaluator import Evaluator

__all__ = [
    "CHECK_POINTS",
    "MAX_AUTO_MARGIN",
    "InLoopPredictor",
    "calibrate",
    "prepare_in_loop",
    "restore_in_loop",
    "trial_budget",
]

#: Random policies measured after calibration to check the predictor on points it was not fitted on.
CHECK_POINTS = 3
#: Grid of the profiled table per channel axis (fractions of full width; the lower bound is added).
GRID = (0.25, 0.5, 0.75, 1.0)
#: Random off-grid points per layer type (they choose stepped or plain interpolation).
EXTRA_SAMPLES = 2
#: The largest margin ``budget_margin: auto`` takes (a noisy calibration must not shrink every budget to the minimum).
MAX_AUTO_MARGIN = 0.25
#: The per-layer protocol, capped further by the device's own (its threads, clock and seed are used).
PROFILE_PROTOCOL = MeasureProtocol(
    warmup=2, min_runs=5, max_runs=200, min_seconds=0.03, max_seconds=2.0, max_attempts=2
)


class InLoopPredictor(LatencyModel):
    """Predicted latency of a measured device: a calibrated lookup table or the MACs/bytes fit.

    ``predict_ms(space, widths, batch, removed_blocks)`` (< 1 ms) answers like any predicted latency
    model (the removed blocks' layers left out); its results are named ``<measured model>~<lut|fit>``.
    :attr:`record` is the calibration record.
    """

    requires_model: ClassVar[bool] = False
    name: ClassVar[str] = "in-loop"

    def __init__(
        self,
        measured_with: str,
        batch_size: int,
        *,
        table: LookupTable | None = None,
        fit: LatencyFit | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        if (table is None) == (fit is None):
            raise ValueError("an in-loop predictor is a lookup table or a fit, exactly one")
        self.measured_with, self.batch_size = measured_with, int(batch_size)
        self.table, self.fit = table, fit
        self.record: dict[str, Any] = record or {}

    @property
    def kind(self) -> str:
        """``"lut"`` or ``"fit"``."""
        return "lut" if self.table is not None else "fit"

    @property
    def label(self) -> str:
        """The name candidates carry in ``metrics.latency_model``: ``torch-cpu~lut``."""
        return f"{self.measured_with}~{self.kind}"

    def predict_layers(self, layers: Sequence[LayerShape], batch_size: int = 1) -> LatencyResult:
        if batch_size != self.batch_size:
            raise HardwareError(
                f"the in-loop predictor was calibrated at batch size {self.batch_size}, not {batch_size}"
            )
        if self.table is not None:
            ms = self.table.predict(layers)
        else:
            assert self.fit is not None
            ms = self.fit(float(sum(s.macs for s in layers)), float(sum(s.bytes for s in layers)))
        details = {"unit": "ms", "predictor": self.kind, "measured_with": self.measured_with, "batch_size": batch_size}
        return LatencyResult(ms=float(ms), kind="predicted", model_name=self.label, details=details)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "predictor": self.label}

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (the calibration record is not part of it)."""
        return {
            "measured_with": self.measured_with,
            "batch_size": self.batch_size,
            "table": self.table.to_json() if self.table is not None else None,
            "fit": asdict(self.fit) if self.fit is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InLoopPredictor:
        """From :meth:`to_json`'s form (no profiling, no measurement)."""
        table = data.get("table")
        fit = data.get("fit")
        return cls(
            str(data["measured_with"]),
            int(data["batch_size"]),
            table=LookupTable.from_json(table, source="in-loop predictor") if table is not None else None,
            fit=LatencyFit(**fit) if fit is not None and table is None else None,
        )


def _layer_protocol(own: MeasureProtocol | None) -> MeasureProtocol:
    """:data:`PROFILE_PROTOCOL` with the device's threads, clock and seed, no longer than its own."""
    if own is None:
        return PROFILE_PROTOCOL
    p = PROFILE_PROTOCOL
    min_runs = min(p.min_runs, own.min_runs)
    return replace(
        p,
        threads=own.threads,
        clock=own.clock,
        seed=own.seed,
        cv_threshold=own.cv_threshold,
        warmup=min(p.warmup, own.warmup),
        min_runs=min_runs,
        max_runs=max(min_runs, min(p.max_runs, own.max_runs)),
        min_seconds=min(p.min_seconds, own.min_seconds),
        max_seconds=min(p.max_seconds, own.max_seconds),
        max_attempts=min(p.max_attempts, own.max_attempts),
    )


def _profile_table(
    ev: Evaluator, samples: Sequence[tuple[Mapping[str, int], float]]
) -> tuple[LookupTable | None, str | None, dict[str, Any]]:
    """A lookup table of ``ev``'s model on this CPU, scaled to the measured ``(widths, ms)`` samples;
    or None and why not."""
    from prunepilot.hw_models.lut_profile import default_channel_block, profile_layers
    from prunepilot.hw_models.measure import TorchCPULatency, cpu_name

    if not isinstance(ev.latency, TorchCPULatency):
        why = f"lookup tables are profiled with torch eager on this CPU, not with {ev.latency.name!r}; the fit is used"
        return None, why, {}
    protocol = _layer_protocol(ev.latency.protocol)
    lower = ev.cfg.evaluation.lower_bound
    fractions = sorted({round(lower, 6), *(f for f in GRID if f > lower)})
    block = default_channel_block()
    started = time.perf_counter()
    try:
        layers = ev.space.layers(ev.space.full_widths())
        entries = profile_layers(
            layers, ev.batch_size, protocol, fractions, EXTRA_SAMPLES, seed=ev.cfg.seed, progress=False, block=block
        )
        grid = {"grid_fractions": fractions, "channel_block": block, "layer_protocol": protocol.record()}
        meta = {
            "device": ev.cfg.device.name,
            "cpu": cpu_name(),
            "runtime": "torch-eager-cpu",
            "clock": protocol.clock,
            "threads": protocol.threads,
            "model": ev.cfg.model.spec,
            "input_shape": list(ev.input_shape),
            **grid,
        }
        table = LookupTable(entries, 0.0, ev.batch_size, meta=meta)
        calibrated = LutLatency(table=table).calibrate([(ev.space.layers(w), ms) for w, ms in samples]).table
    except HardwareError as exc:
        return None, f"{exc}; the fit is used", {}
    seconds = time.perf_counter() - started
    info = {
        "layer_types": len(entries),
        "grid_points": sum(len(e.cin) * len(e.cout) for e in entries.values()),
        **grid,
        "scale": calibrated.scale,
        "overhead_ms": calibrated.overhead_ms,
        "profile_seconds": seconds,
    }
    calibrated.meta["profile_seconds"] = seconds
    return calibrated, None, info


def _check_widths(ev: Evaluator, n: int) -> list[dict[str, int]]:
    """``n`` random policies (keep ratios uniform in [lower bound, 1] per group), seeded by the search."""
    gen = np.random.default_rng([ev.cfg.seed, 15])
    lower = ev.cfg.evaluation.lower_bound
    groups = len(ev.space.groups)
    return [dict(ev.make_policy(gen.uniform(lower, 1.0, groups).tolist()).channels) for _ in range(n)]


def _mean_keep(ev: Evaluator, widths: Mapping[str, int]) -> float:
    return float(np.mean([widths[g.name] / g.channels for g in ev.space.groups]))


def calibrate(ev: Evaluator, kind: str | None = None, checks: int = CHECK_POINTS) -> InLoopPredictor:
    """The in-loop predictor of ``ev``'s measured latency model, with its calibration record.

    Reuses the uniform points :meth:`Evaluator.calibrate_fit` measured (calling it first if it
    has not run), then measures ``checks`` random policies to check the predictor on. ``kind``
    defaults to ``evaluation.in_loop_predictor``. Does not set ``ev.in_loop``.
    """
    started = time.perf_counter()
    kind = kind or ev.cfg.evaluation.in_loop_predictor
    if ev.fit is None or not ev.fit_measurements:
        ev.calibrate_fit()
    assert ev.fit is not None
    fitted = [
        (f"uniform {r:g}", dict(PruningPolicy.uniform(ev.space, r).channels), res) for r, res in ev.fit_measurements
    ]
    table: LookupTable | None = None
    reason: str | None = None
    lut_info: dict[str, Any] = {}
    if kind == "lut":
        table, reason, lut_info = _profile_table(ev, [(w, res.ms) for _, w, res in fitted])
    predictor = InLoopPredictor(ev.latency.name, ev.batch_size, table=table, fit=None if table else ev.fit)
    held_out = [(f"random {i}", w, ev.measure_latency(None, w)) for i, w in enumerate(_check_widths(ev, checks))]
    points: list[dict[str, Any]] = []
    for (label, widths, res), out in [(p, False) for p in fitted] + [(p, True) for p in held_out]:
        pred = predictor.predict_ms(ev.space, widths, ev.batch_size).ms
        points.append(
            {
                "point": label,
                "held_out": out,
                "mean_keep": _mean_keep(ev, widths),
                "measured_ms": float(res.ms),
                "cv": res.cv,
                "stable": not res.unstable,
                "predicted_ms": float(pred),
                "rel_error": float(pred / res.ms - 1.0) if res.ms > 0 else None,
            }
        )

    def worst(rows: Sequence[dict[str, Any]]) -> float | None:
        errors = [abs(r["rel_error"]) for r in rows if r["rel_error"] is not None]
        return max(errors) if errors else None

    under = max(0.0, *(p["measured_ms"] / p["predicted_ms"] - 1.0 for p in points if p["predicted_ms"] > 0))
    predictor.record = {
        "predictor": predictor.label,
        "asked": kind,
        "fallback_reason": reason,
        "lut": lut_info or None,
        "fit": asdict(ev.fit),
        "points": points,
        "max_abs_rel_error": worst(points),
        "max_abs_rel_error_held_out": worst([p for p in points if p["held_out"]]),
        "max_under_prediction": under,
        "margin_auto": min(MAX_AUTO_MARGIN, under),
        "calibration_seconds": time.perf_counter() - started,
    }
    return predictor


def trial_budget(
    budget_ms: float, margin: float | str, predictor: InLoopPredictor | None, reachable_ms: float
) -> dict[str, Any]:
    """The budget strategies aim at: ``budget / (1 + margin)``, never below ``reachable_ms``.

    ``margin`` ``"auto"`` is the predictor's ``margin_auto`` (its largest under-prediction on its
    calibration and check points, capped; 0 without a predictor). The clip keeps
    every budget reachable for strategies that refuse one they cannot meet (the agents'
    environment, the knapsack).
    """
    if margin == "auto":
        found = predictor.record.get("margin_auto") if predictor is not None else None
        value, source = float(found or 0.0), "auto"
    else:
        value, source = float(margin), "config"
    aim = budget_ms / (1.0 + value)
    return {
        "margin": value,
        "margin_source": source,
        "trial_budget_ms": max(aim, reachable_ms),
        "clipped_to_reachable_min": aim < reachable_ms,
        "predicted_reachable_min_ms": reachable_ms,
    }


def prepare_in_loop(cfg: SearchConfig, ev: Evaluator, budget_ms: float) -> dict[str, Any]:
    """Driver-side, once per search: calibrate ``ev.in_loop`` where it applies; the margin.

    Returns the ``in_loop_latency`` record of ``run.json``: ``mode`` (``predicted``,
    ``measured`` or ``device-predicts``), ``predictor`` (its JSON, for resume and Ray trials),
    ``calibration`` and the :func:`trial_budget` fields.
    """
    ev.in_loop = None
    if not ev.latency.requires_model:
        mode = "device-predicts"
    elif cfg.evaluation.in_loop_latency == "measured":
        mode = "measured"
    else:  # predicted, or anchored: candidates timed beside the base, the predictor for budget checks
        mode = cfg.evaluation.in_loop_latency
        ev.in_loop = calibrate(ev)
    lowest = PruningPolicy.uniform(ev.space, cfg.evaluation.lower_bound).channels
    # with depth, the fastest proposal also removes every removable block
    reachable = ev.predict_latency_ms(lowest, ev.space.block_names if cfg.evaluation.depth else ())
    record: dict[str, Any] = {"mode": mode}
    if ev.in_loop is not None:
        record.update(predictor=ev.in_loop.to_json(), calibration=ev.in_loop.record)
    record.update(trial_budget(budget_ms, cfg.evaluation.budget_margin, ev.in_loop, reachable))
    return record


def restore_in_loop(ev: Evaluator, info: Mapping[str, Any]) -> float | None:
    """On resume: ``ev.in_loop`` from ``run.json`` (None for runs from before it existed, which
    measured in the loop and keep doing so); returns the stored trial budget, if any."""
    record = info.get("in_loop_latency") or {}
    predictor = record.get("predictor")
    ev.in_loop = InLoopPredictor.from_json(predictor) if predictor else None
    if ev.in_loop is not None:
        ev.in_loop.record = dict(record.get("calibration") or {})
    budget = record.get("trial_budget_ms")
    return float(budget) if budget is not None else None
