"""``hw-eval``: measure random policies of a model and score every latency model against them.

One run, for one model:

1. build the :class:`~prunepilot.pruning.PruningSpace`; draw ``calib + samples`` random
   policies (a global keep level ~ U(min_ratio, 1) per policy, each group jittered by
   ``jitter`` around it: candidates spread over the whole latency range, as in a search);
2. prune each (``apply_policy``) and measure it with the device's measured latency model in
   ``rounds`` interleaved rounds (every candidate once per round); a candidate's latency is the
   lowest of its round medians, so a burst of load from other processes spoils one round,
   not the figure;
3. fit the calibrated predictors (roofline, MACs, LUT, learned) on the first ``calib`` (<= 10)
   candidates, predict the other ``samples`` from their policies alone (``predict_ms``), and
   report :class:`~prunepilot.hw_models.evaluate.HwMetrics` per latency model, predictions/s
   and measurements/s, and the measurement's own repeatability (the ceiling).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunepilot.hw_models.base import LatencyModel, LatencyResult
from prunepilot.hw_models.evaluate import HwMetrics, hw_metrics
from prunepilot.hw_models.learned import LearnedLatency, lut_layer_samples
from prunepilot.hw_models.lut import LookupTable, LutLatency
from prunepilot.hw_models.proxies import MacsProxy
from prunepilot.hw_models.roofline import RooflineLatency, calibrate_profile, load_profile
from prunepilot.pruning.layers import LayerShape


@dataclass(frozen=True)
class HwEvalSettings:
    """Settings of one hw-eval run.

    Attributes:
        samples: Candidates scored (not used for fitting).
        calib: Extra candidates (<= 10) measured to calibrate roofline, MACs, LUT and learned.
        rounds: Interleaved measurement rounds per candidate (>= 1).
        min_ratio: Lowest global keep ratio of a random policy.
        jitter: Per-group keep-ratio jitter around the policy's global level (absolute).
        seed: Seed of the random policies.
        roofline_profile: Roofline profile (name or YAML path) to calibrate.
        repeat: Whole-model measurements of the full model for the repeatability figure.
        budget_ms: Latency budget for the false-within-budget rate; ``None`` = median measured.
    """

    samples: int = 50
    calib: int = 10
    rounds: int = 3
    min_ratio: float = 0.25
    jitter: float = 0.15
    seed: int = 0
    roofline_profile: str = "x86-avx2-core"
    repeat: int = 5
    budget_ms: float | None = None


@dataclass
class Candidate:
    """One measured random policy."""

    widths: dict[str, int]
    layers: list[LayerShape]
    ms: float = 0.0
    round_ms: list[float] = field(default_factory=list)
    cvs: list[float] = field(default_factory=list)


@dataclass
class HwEvalReport:
    """Everything one run found (JSON-ready via :meth:`to_dict`)."""

    model: str
    input_shape: list[int]
    measured_with: dict[str, Any]
    metrics: dict[str, HwMetrics]
    predictions_per_s: dict[str, float]
    predictions_per_cpu_s: dict[str, float]
    measurements_per_s: float
    prune_and_measure_per_s: float
    repeatability: dict[str, Any]
    candidate_cv_median: float
    measured_ms: list[float]
    predicted_ms: dict[str, list[float]]
    notes: list[str]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = dict(self.__dict__)
        out["metrics"] = {k: v.to_dict() for k, v in self.metrics.items()}
        return out


def random_ratios(names: Sequence[str], rng: random.Random, min_ratio: float, jitter: float) -> dict[str, float]:
    """Keep ratios for one random policy (see the module docstring)."""
    level = rng.uniform(min_ratio, 1.0)
    return {n: min(1.0, max(0.05, level + rng.uniform(-jitter, jitter))) for n in names}


def repeatability(
    measurer: LatencyModel, model: nn.Module, input_shape: Sequence[int], runs: int = 5
) -> dict[str, Any]:
    """Measure the same model ``runs`` times in this process: medians, spread (max/min - 1), CVs."""
    res = [measurer.measure_ms(model, input_shape, int(input_shape[0])) for _ in range(max(2, runs))]
    medians = [r.ms for r in res]
    return {
        "medians_ms": medians,
        "spread": max(medians) / min(medians) - 1.0,
        "cvs": [r.cv for r in res],
        "unstable": [r.unstable for r in res],
    }


def _timed_predictions(
    lm: LatencyModel, space: Any, cands: Sequence[Candidate], batch: int
) -> tuple[list[float], float, float]:
    """Predictions from policies alone (``predict_ms``, as the search calls it), with their rate
    per wall-clock second and per CPU second of this thread (what other processes do not inflate)."""
    t0, c0 = time.perf_counter(), time.thread_time()
    preds = [lm.predict_ms(space, c.widths, batch).ms for c in cands]
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    return preds, len(cands) / max(wall, 1e-9), len(cands) / max(cpu, 1e-9)


def run_hw_eval(
    model: nn.Module,
    input_shape: Sequence[int],
    measurer: LatencyModel,
    settings: HwEvalSettings = HwEvalSettings(),
    *,
    model_name: str = "",
    lut: LookupTable | None = None,
    extra_predictors: Mapping[str, LatencyModel] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> HwEvalReport:
    """Run hw-eval for one model (see the module docstring). ``lut`` enables LUT and learned."""
    from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy

    shape = [int(s) for s in input_shape]
    batch = shape[0]
    model = model.eval()
    example = torch.randn(*shape)
    space = PruningSpace.build(model, example)
    rng = random.Random(settings.seed)
    n_cal = min(10, settings.calib)
    cands: list[Candidate] = []
    pruned: list[nn.Module] = []
    t_prune = time.perf_counter()
    for _ in range(n_cal + settings.samples):
        pol = PruningPolicy.from_ratios(space, random_ratios(space.names, rng, settings.min_ratio, settings.jitter))
        pruned.append(apply_policy(model, pol, example, space=space))
        cands.append(Candidate(dict(pol.channels), space.layers(pol.channels)))
    t_prune = time.perf_counter() - t_prune
    log(f"{model_name}: pruned {len(cands)} random policies in {t_prune:.1f} s")

    t_meas = time.perf_counter()
    for r in range(max(1, settings.rounds)):
        order = list(range(len(cands)))
        random.Random(settings.seed + 1 + r).shuffle(order)
        for i in order:
            res: LatencyResult = measurer.measure_ms(pruned[i], shape, batch)
            cands[i].round_ms.append(res.ms)
            cands[i].cvs.append(res.cv or 0.0)
        log(f"{model_name}: measurement round {r + 1}/{settings.rounds} done")
    t_meas = time.perf_counter() - t_meas
    for c in cands:
        c.ms = min(c.round_ms)
    del pruned

    calib, evals = cands[:n_cal], cands[n_cal:]
    cal_samples = [(c.layers, c.ms) for c in calib]
    profile = load_profile(settings.roofline_profile)
    predictors: dict[str, LatencyModel] = {
        "roofline (raw)": RooflineLatency(profile),
        "roofline (calibrated)": RooflineLatency(
            calibrate_profile(profile, cal_samples, batch, measured_with=measurer.name)
        ),
        "macs (calibrated)": MacsProxy.fit(cal_samples, batch),
    }
    if lut is not None:
        lut_lm = LutLatency(table=lut)
        predictors["lut"] = lut_lm
        predictors["lut (calibrated)"] = lut_lm.calibrate(cal_samples)
        learned = LearnedLatency(reference_profile=settings.roofline_profile).fit_layers(lut_layer_samples(lut))
        predictors["learned"] = learned.calibrate(cal_samples, batch)
    predictors.update(extra_predictors or {})

    measured = [c.ms for c in evals]
    metrics: dict[str, HwMetrics] = {}
    speeds: dict[str, float] = {}
    cpu_speeds: dict[str, float] = {}
    preds_all: dict[str, list[float]] = {}
    for name, lm in predictors.items():
        preds, speeds[name], cpu_speeds[name] = _timed_predictions(lm, space, evals, batch)
        metrics[name] = hw_metrics(measured, preds, settings.budget_ms)
        preds_all[name] = preds

    rep = repeatability(measurer, model, shape, settings.repeat)
    notes = []
    if settings.rounds > 1:
        notes.append(f"each candidate's latency is the lowest of {settings.rounds} interleaved round medians")
    return HwEvalReport(
        model=model_name or type(model).__name__,
        input_shape=shape,
        measured_with=measurer.describe(),
        metrics=metrics,
        predictions_per_s=speeds,
        predictions_per_cpu_s=cpu_speeds,
        measurements_per_s=len(cands) * max(1, settings.rounds) / max(t_meas, 1e-9),
        prune_and_measure_per_s=len(cands) / max(t_meas / max(1, settings.rounds) + t_prune, 1e-9),
        repeatability=rep,
        candidate_cv_median=statistics.median(cv for c in cands for cv in c.cvs),
        measured_ms=measured,
        predicted_ms=preds_all,
        notes=notes,
        settings=dict(settings.__dict__),
    )
