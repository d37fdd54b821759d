"""The evaluator: score one pruning policy on accuracy and device latency.

    policy -> apply_policy (prune) -> recalibrate BN -> accuracy on the held-out split of the
    *training* data -> latency from the device's latency model (measured or predicted)

With ``bn-recal`` or ``head-refit`` (the default, ``auto``, on a linear-headed model) and
``evaluation.scoring: slice`` (the default) the pruning and scoring run on the leading channels of
a once-reordered copy of the base instead (:mod:`prunepilot.search.sliced`: the same figure, no
pruning per candidate; head-refit's classifier refit is undone after each); see
:attr:`Evaluator.scoring_path`.

One :class:`Evaluator` per process holds the base model, the data batches and the pruning
space (see :func:`get_evaluator`, a per-process cache), so a candidate costs only its own
pruning and scoring. The test split is never touched here: it is for final reports.

Strategies see it only through :class:`~prunepilot.search.strategies.PolicyEvaluator`
(``make_policy``, ``evaluate``, ``score``, ``predict_latency_ms``); the rest is the driver's.
:class:`Metrics` lives in :mod:`prunepilot.search.records` (importable from here too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from prunepilot.errors import ConfigError
from prunepilot.hw_models.base import LatencyModel, LatencyResult
from prunepilot.hw_models.measure import for_paired_rounds
from prunepilot.hw_models.registry import get_latency_model
from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy, prune_and_recalibrate
from prunepilot.search.config import SearchConfig, no_blocks_reason
from prunepilot.search.devices import DeviceFigures
from prunepilot.search.protocols import HeadRefit, ScoringData, ScoringProtocol, resolve_protocol
from prunepilot.search.records import Candidate, Metrics
from prunepilot.search.sliced import SlicedScorer
from prunepilot.training import evaluate_accuracy

if TYPE_CHECKING:
    from prunepilot.search.inloop import InLoopPredictor

__all__ = ["Evaluator", "LatencyFit", "Metrics", "build_latency_model", "config_key", "get_evaluator"]

log = logging.getLogger(__name__)

#: Protocols the evaluator can score on a sliced copy (``evaluation.scoring: slice``), not pruning.
SLICEABLE = ("bn-recal", "head-refit")


@dataclass(frozen=True)
class LatencyFit:
    """A fast latency predictor for budget checks: ``ms = intercept + slope * MACs + byte_slope * bytes``.

    ``bytes`` is the analytic fp32 traffic of the compute layers (weights plus input and output
    activations, :attr:`LayerShape.bytes <prunepilot.pruning.layers.LayerShape.bytes>`), which
    grows linearly with the widths where MACs grow quadratically: on CPUs the memory-bound
    part keeps a pruned model slower than its MACs suggest. Fitted by the driver
    (:meth:`Evaluator.calibrate_fit`) by non-negative least squares on the measured latency of
    uniformly pruned models (``evaluation.fit_points`` keep ratios from the lower bound to 1),
    so every trial uses the same one. ``byte_slope`` 0 gives the affine-in-MACs fit of older runs.
    """

    intercept: float
    slope: float
    byte_slope: float = 0.0

    def __call__(self, macs: float, bytes_moved: float = 0.0) -> float:
        return self.intercept + self.slope * macs + self.byte_slope * bytes_moved

    @classmethod
    def from_points(cls, macs: Sequence[float], bytes_moved: Sequence[float], ms: Sequence[float]) -> LatencyFit:
        """Non-negative least squares of ``ms`` on ``[1, macs, bytes]`` (two points: the line through them)."""
        import numpy as np
        from scipy.optimize import nnls

        y = np.asarray(ms, dtype=float)
        if len(y) < 3:
            slope = (y[-1] - y[0]) / max(1.0, float(macs[-1] - macs[0]))
            return cls(intercept=float(y[-1] - slope * macs[-1]), slope=float(slope))
        a = np.column_stack([np.ones_like(y), np.asarray(macs, float), np.asarray(bytes_moved, float)])
        scale = np.where(a.max(axis=0) > 0, a.max(axis=0), 1.0)
        coef, _ = nnls(a / scale, y)
        coef = coef / scale
        return cls(intercept=float(coef[0]), slope=float(coef[1]), byte_slope=float(coef[2]))


class Evaluator:
    """Scores policies for one search config. Build with :func:`get_evaluator`."""

    def __init__(self, cfg: SearchConfig, base_state: Mapping[str, torch.Tensor] | None = None) -> None:
        from prunepilot.data import build_data
        from prunepilot.models import build_model, load_model

        self.cfg = cfg
        # The device's latency model first: a bad device or setting fails before data and model.
        self.latency, self.batch_size = build_latency_model(cfg)
        #: Latency on each of ``device.also`` (:mod:`prunepilot.search.devices`), in ``metrics.devices``.
        self.devices = DeviceFigures(cfg)
        torch.manual_seed(cfg.seed)
        self.data = build_data(cfg.data)
        c, h, w = self.data.input_shape
        self.input_shape: tuple[int, ...] = (1, c, h, w)
        self.example = torch.zeros(self.input_shape)
        spec, ncls = cfg.model.spec, self.data.num_classes
        #: Where the base weights live (a checkpoint path), for `prunepilot prune/apply --run`.
        self.base_checkpoint: str | None = str(cfg.model.checkpoint) if cfg.model.checkpoint else None
        if base_state is not None:
            model = build_model(spec, num_classes=ncls, in_channels=c)
            model.load_state_dict(base_state, strict=True)
        elif cfg.model.checkpoint is not None:
            model = load_model(spec, cfg.model.checkpoint, num_classes=ncls, in_channels=c)
        else:
            from prunepilot.training import TrainConfig, train_base_model

            model, info = train_base_model(spec, cfg.data, cfg.model.train or TrainConfig(), cfg.model.cache_dir)
            self.base_checkpoint = str(Path(info["checkpoint"]).resolve())
        self.model: nn.Module = model.eval()
        self.space = PruningSpace.build(self.model, self.example, ignored_layers=cfg.model.ignored_layers)
        ev = cfg.evaluation
        if ev.depth and not self.space.blocks:  # the base model stays cached for a width-only search
            raise ConfigError(f"field 'evaluation.depth': {no_blocks_reason(spec)}")
        self.calib = [(x, y) for i, (x, y) in enumerate(self.data.calib) if i < ev.bn_batches]
        self.val = [(x, y) for i, (x, y) in enumerate(self.data.val) if ev.val_batches is None or i < ev.val_batches]
        self.fit: LatencyFit | None = None
        #: A measured device's in-loop predictor (:mod:`prunepilot.search.inloop`), set by the driver
        #: and shipped to trials; None: in-loop candidates are measured. Fit points: ``(keep ratio, result)``.
        self.in_loop: InLoopPredictor | None = None
        #: ``in_loop_latency: anchored``: the base latency (ms) measured at search start, set by the
        #: driver and shipped to trials; candidates are then timed beside the base (:meth:`anchored_latency`).
        self.anchor_ms: float | None = None
        #: A measured device's base latency (ms) as measured at search start, set by the driver: the
        #: final figures (re-measured front points, the best, the budget fill) are timed beside the
        #: base and given as their ratio times this (``evaluation.remeasure_timing: paired``).
        self.base_latency_ms: float | None = None
        self.fit_measurements: list[tuple[float, LatencyResult]] = []
        #: The scoring protocol (``evaluation.protocol``, ``auto`` resolved); prepared on first use.
        self.protocol: ScoringProtocol
        #: Why ``evaluation.protocol: auto`` scores by bn-recal (None: it did not fall back).
        self.protocol_fallback_reason: str | None
        self.protocol, self.protocol_fallback_reason = resolve_protocol(
            ev.protocol, ev.protocol_settings, self.model, self.example
        )
        if self.protocol_fallback_reason:
            log.warning("%s", self.protocol_fallback_reason)
        self._prepared: dict[str, Any] | None = None
        self._cache: dict[tuple[int | str, ...], Metrics] = {}
        #: Whether the last :meth:`evaluate` call was answered from the cache.
        self.last_cached = False
        self._slicer: SlicedScorer | None = None
        self._recal_slicer: SlicedScorer | None | Literal[False] = None  # False: the model cannot be sliced
        self._scoring: tuple[str, str | None] | None = None  # (path, fallback reason), decided on first use

    # --- the contract ------------------------------------------------------------------------
    def make_policy(
        self, ratios: Mapping[str, float] | Sequence[float], removed_blocks: Sequence[str] = (), **metadata: Any
    ) -> PruningPolicy:
        """A policy with this search's rounding and criterion, removing ``removed_blocks``."""
        ev = self.cfg.evaluation
        policy = PruningPolicy.from_ratios(
            self.space, ratios, round_to=ev.round_to, importance=ev.importance, metadata=metadata
        )
        return policy.with_removed_blocks(self.space, removed_blocks) if removed_blocks else policy

    def evaluate(self, policy: PruningPolicy, latency: LatencyResult | None = None) -> Metrics:
        """Score ``policy`` with the search's protocol on held-out training data; get latency
        (``latency``: the policy's model's latency already taken, used as it is)."""
        key = policy.key()
        self.last_cached = key in self._cache
        if self.last_cached:
            return self._cache[key]
        start = time.perf_counter()
        gone = policy.removed_blocks
        if self.protocol.name in SLICEABLE:
            slicer = self._slicer if self.scoring_path == "slice" and not gone else None  # slices know widths only
            acc = slicer.try_accuracy(policy, self._refit()) if slicer else None
            if acc is None and self.protocol.name != "bn-recal":  # pruned, scored by the protocol
                acc = self._protocol_score(policy, pruned := self._apply(policy))
                metrics = self.score(pruned.eval(), policy.channels, started=start, accuracy=acc, latency=latency,
                                     removed=gone)  # fmt: skip
            elif acc is None:
                metrics = self.score(self.prune(policy), policy.channels, started=start, latency=latency, removed=gone)
            else:  # sliced: latency_of prunes a copy only for a latency model that must time one
                metrics = self.score(None, policy.channels, started=start, accuracy=acc, latency=latency)
        else:
            pruned = self._apply(policy)
            scored = self._protocol_score(policy, pruned)
            # the protocol may train the pruned copy; its architecture, hence its latency, is the same
            metrics = self.score(
                pruned.eval(), policy.channels, started=start, accuracy=scored, latency=latency, removed=gone
            )
        self._cache[key] = metrics
        return metrics

    def in_loop_latency_ms(self, policy: PruningPolicy) -> float:
        """The in-loop latency :meth:`evaluate` gives ``policy`` (its cached figure, else from
        :meth:`latency_of`), without scoring it."""
        cached = self._cache.get(policy.key())
        if cached is not None:
            return float(cached.latency_ms)
        return float(self.latency_of(None, policy.channels, policy.removed_blocks).ms)

    def _prepared_data(self) -> ScoringData:
        data = self.scoring_data()
        if self._prepared is None:  # once per process (a supernet is trained here)
            self._prepared = self.protocol.prepare(data)
        return data

    def _protocol_score(self, policy: PruningPolicy, pruned: nn.Module) -> float:
        return float(self.protocol.score(policy, lambda: pruned, self._prepared_data()))

    def _refit(self) -> Callable[[nn.Module], Callable[[], None]] | None:
        """What a sliced candidate gets after recalibration: the head refit of ``head-refit``."""
        if not isinstance(self.protocol, HeadRefit):
            return None
        proto, data = self.protocol, self._prepared_data()
        return lambda model: proto.refit(model, data)

    def recalibrated_accuracy(self, policy: PruningPolicy) -> float:
        """Held-out accuracy of ``policy`` after BN recalibration alone, whatever the search's protocol.

        The cheap figure a per-group sensitivity analysis needs (one group pruned, the rest whole,
        where recalibration is a fair score): sliced when the model allows it, else pruned. Not cached.
        """
        if self._recal_slicer is None and self.cfg.evaluation.scoring == "slice" and not policy.removed_blocks:
            ev = self.cfg.evaluation
            if self._decide_scoring()[0] == "slice":
                self._recal_slicer = self._slicer
            else:
                args = (self.model, self.example, self.space, self.calib, self.val, ev.importance)
                self._recal_slicer, _reason = SlicedScorer.try_build(*args)
                self._recal_slicer = self._recal_slicer or False
        slicer = self._recal_slicer if not policy.removed_blocks else None
        acc = slicer.try_accuracy(policy) if slicer else None
        return float(acc) if acc is not None else float(evaluate_accuracy(self.prune(policy), self.val))

    @property
    def scoring_path(self) -> str:
        """How candidates are scored: ``"slice"`` or ``"prune"``, decided on first use.

        ``"slice"``: by a :class:`~prunepilot.search.sliced.SlicedScorer` (built then); ``"prune"``:
        configured, a model it cannot represent (:attr:`scoring_fallback_reason`), or a protocol other
        than bn-recal and head-refit.
        """
        return self._decide_scoring()[0]

    @property
    def scoring_fallback_reason(self) -> str | None:
        """Why bn-recal or head-refit prunes although ``evaluation.scoring`` is ``"slice"`` (None: it slices)."""
        return self._decide_scoring()[1]

    def _decide_scoring(self) -> tuple[str, str | None]:
        if self._scoring is None:
            self._scoring = ("prune", None)
            if self.protocol.name in SLICEABLE and self.cfg.evaluation.scoring == "slice":
                ev = self.cfg.evaluation
                args = (self.model, self.example, self.space, self.calib, self.val, ev.importance)
                self._slicer, reason = SlicedScorer.try_build(*args, protocol=self.protocol.name)
                self._scoring = ("slice", None) if self._slicer is not None else ("prune", reason)
        return self._scoring

    def scoring_data(self, work_dir: Path | None = None) -> ScoringData:
        """What a protocol sees: the training part, calibration and held-out batches, the base."""
        ev = self.cfg.evaluation
        return ScoringData.from_bundle(
            self.data,
            self.model,
            self.space,
            calib=self.calib,
            val=self.val,
            importance=ev.importance,
            lower_bound=ev.lower_bound,
            round_to=ev.round_to,
            seed=self.cfg.seed,
            work_dir=work_dir,
        )

    def score(
        self,
        model: nn.Module | None,
        widths: Mapping[str, int],
        *,
        started: float | None = None,
        accuracy: float | None = None,
        protocol: str | None = None,
        latency: LatencyResult | None = None,
        removed: Sequence[str] = (),
    ) -> Metrics:
        """Accuracy on the held-out batches and latency of ``model``, which has these ``widths``
        and ``removed`` blocks (and its latency on each of ``device.also``, in ``metrics.devices``).

        What :meth:`evaluate` does after pruning, for models built otherwise (a one-shot
        supernet's weights: ``protocol`` names how, e.g. ``"autoslim"``). ``accuracy``, when
        given, is the protocol's score (not recomputed); ``model`` may then be None (latency
        from the widths, pruning only for a latency model that must time a model).
        ``latency``, when given, is taken as the model's. ``eval_seconds`` counts from ``started``
        (a ``perf_counter()`` value; default: now). Not cached.
        """
        start = time.perf_counter() if started is None else started
        if accuracy is None:
            if model is None:
                raise ValueError("Evaluator.score needs a model or an accuracy")
            accuracy = evaluate_accuracy(model, self.val)
        acc = accuracy
        lat = self.latency_of(model, widths, removed) if latency is None else latency
        return Metrics(
            accuracy=float(acc),
            latency_ms=float(lat.ms),
            latency_kind=str(lat.kind),
            latency_model=lat.model_name,
            macs=self.space.macs(widths, removed),
            params=self.space.params(widths, removed),
            eval_seconds=time.perf_counter() - start,
            latency_cv=lat.cv,
            protocol=protocol or self.protocol.name,
            devices=self.devices.latencies(self.space, widths, removed),
        )

    def _apply(self, policy: PruningPolicy) -> nn.Module:
        return apply_policy(self.model, policy, self.example, space=self.space, calib_batches=self.calib)

    def prune(self, policy: PruningPolicy) -> nn.Module:
        """The pruned, BN-recalibrated model for ``policy`` (the path apply and prune take too)."""
        return prune_and_recalibrate(self.model, policy, self.example, space=self.space, calib_batches=self.calib)

    def latency_of(
        self, model: nn.Module | None, widths: Mapping[str, int], removed: Sequence[str] = ()
    ) -> LatencyResult:
        """An in-loop candidate's latency: timed beside the base when :attr:`anchor_ms` is set, else
        from :attr:`in_loop` when set (``model`` unused), else measured."""
        if self.anchor_ms is not None and self.latency.requires_model:
            return self.anchored_latency(model, widths, removed)
        if self.in_loop is not None:
            return self.in_loop.predict_ms(self.space, widths, self.batch_size, removed)
        return self.measure_latency(model, widths, removed)

    @property
    def times_in_loop(self) -> bool:
        """Whether :meth:`latency_of` times the candidate's model on the device (anchored, or
        measured with no in-loop predictor) rather than predicting it."""
        return self.latency.requires_model and (self.anchor_ms is not None or self.in_loop is None)

    def anchored_latency(
        self,
        model: nn.Module | None,
        widths: Mapping[str, int],
        removed: Sequence[str] = (),
        anchor_ms: float | None = None,
    ) -> LatencyResult:
        """The candidate timed in ``evaluation.anchor_rounds`` rounds interleaved with the base model:
        the median of the per-round ratios times ``anchor_ms`` (default :attr:`anchor_ms`: the base as
        measured when the search started). Each round times each model briefly
        (``evaluation.anchor_runs`` runs, :func:`~prunepilot.hw_models.measure.for_paired_rounds`).
        Load that drifts during a search moves both timings of a round alike, so the ratio, hence
        the figure, holds where an absolute timing would drift.
        ``cv`` is the ratios' coefficient of variation; the model is named ``<device model>~anchored``."""
        anchor = self.anchor_ms if anchor_ms is None else anchor_ms
        if anchor is None:
            raise RuntimeError("anchored_latency needs anchor_ms (the base latency measured at search start)")
        model = model if model is not None else self._model_at(widths, removed)
        ratios, last = [], None
        timer = for_paired_rounds(self.latency, self.cfg.evaluation.anchor_runs)  # a short timing per round
        for _ in range(self.cfg.evaluation.anchor_rounds):
            base = timer.measure_ms(self.model, self.input_shape, self.batch_size)
            last = timer.measure_ms(model, self.input_shape, self.batch_size)
            ratios.append(last.ms / base.ms)
        assert last is not None  # anchor_rounds >= 1
        ratio = statistics.median(ratios)
        cv = statistics.pstdev(ratios) / statistics.fmean(ratios) if len(ratios) > 1 else 0.0
        details = {**last.details, "anchor_ms": anchor, "ratios": ratios}
        name = f"{last.model_name}~anchored"
        return replace(last, ms=ratio * anchor, cv=cv, iqr_ms=None, model_name=name, details=details)

    def measure_latency(
        self, model: nn.Module | None, widths: Mapping[str, int], removed: Sequence[str] = ()
    ) -> LatencyResult:
        """Latency from the device's own latency model (times ``model``, pruned here if None, when it must);
        ``removed``: the blocks the model lacks."""
        bs = self.batch_size
        if self.latency.requires_model:
            model = model if model is not None else self._model_at(widths, removed)
            return self.latency.measure_ms(model, self.input_shape, bs)
        return self.latency.predict_ms(self.space, widths, bs, removed)

    def _model_at(self, widths: Mapping[str, int], removed: Sequence[str] = ()) -> nn.Module:
        """The pruned model at ``widths`` without ``removed`` blocks, for a latency model that times one."""
        return self.prune(PruningPolicy.from_widths(self.space, widths).with_removed_blocks(self.space, removed))

    def predict_latency_ms(self, widths: Mapping[str, int], removed_blocks: Sequence[str] = ()) -> float:
        """A fast (< 1 ms) latency estimate at ``widths`` without ``removed_blocks``, for budget checks.

        Predicted latency models answer directly; for measured ones the in-loop predictor the
        candidates' latency comes from (:attr:`in_loop`), else the driver's :class:`LatencyFit`.
        """
        gone = tuple(removed_blocks)
        if self.in_loop is not None:
            return float(self.in_loop.predict_ms(self.space, widths, self.batch_size, gone).ms)
        if not self.latency.requires_model:
            return float(self.latency.predict_ms(self.space, widths, self.batch_size, gone).ms)
        if self.fit is None:
            raise RuntimeError("predict_latency_ms needs a LatencyFit; call calibrate_fit() or set .fit")
        moved = self._bytes_moved(widths, gone) if self.fit.byte_slope else 0.0
        return float(self.fit(self.space.macs(widths, gone), moved))

    def _bytes_moved(self, widths: Mapping[str, int], removed_blocks: Sequence[str] = ()) -> float:
        """Analytic fp32 traffic of the compute layers at ``widths`` (the fit's second feature)."""
        return float(sum(layer.bytes for layer in self.space.layers(widths, removed_blocks)))

    def calibrate_fit(
        self, on_range: Callable[[LatencyResult, LatencyResult], object] | None = None
    ) -> tuple[LatencyResult, LatencyResult]:
        """Measure uniformly pruned models from the lower bound to 1; fit :attr:`fit`.

        ``evaluation.fit_points`` keep ratios, evenly spaced, for measured latency models (a
        predicted one answers :meth:`predict_latency_ms` itself: only the two ends are taken). An
        intermediate point whose pruned model fails is skipped. Returns the latency of the base
        model and of the lower-bound model (the fastest a strategy can reach); the fit is shifted
        to pass through the latter, so predicted and measured reachable minimum agree.

        The two ends are measured first and handed to ``on_range(base, lowest)`` before any
        intermediate point, so a budget check that raises there costs two measurements, not all.
        """
        from prunepilot.errors import PruningError

        lower = self.cfg.evaluation.lower_bound
        points = self.cfg.evaluation.fit_points if self.latency.requires_model else 2
        ratios = [lower + (1.0 - lower) * i / (points - 1) for i in range(points)]
        ratios = [ratios[0], ratios[-1], *ratios[1:-1]]  # the ends first
        macs, moved, results, kept = [], [], [], []
        for i, r in enumerate(ratios):
            policy = PruningPolicy.uniform(self.space, r)
            try:
                model = self.model if r >= 1.0 else self.prune(policy)
            except PruningError:
                if i >= 2:
                    continue  # the ends must work (they are the base and the reachable minimum)
                raise
            results.append(self.measure_latency(model, policy.channels))
            kept.append(r)
            macs.append(float(self.space.macs(policy.channels)))
            moved.append(self._bytes_moved(policy.channels))
            if i == 1 and on_range is not None:
                on_range(results[1], results[0])
        self.fit_measurements = list(zip(kept, results, strict=True))  # what the in-loop predictor reuses
        fit = LatencyFit.from_points(macs, moved, [res.ms for res in results])
        # Anchor the fit at the lower bound: the reachable minimum the driver checks the budget
        # against (measured) is then the one strategies and environments see (predicted).
        self.fit = replace(fit, intercept=fit.intercept + results[0].ms - fit(macs[0], moved[0]))
        return results[1], results[0]

    def base_metrics(self, measured: LatencyResult | None = None) -> Metrics:
        """The unpruned model, scored with the same protocol. ``measured``: its latency, already
        measured (the driver's once-per-search figure, with its spread), taken instead of timing
        it again."""
        return self.evaluate(PruningPolicy.uniform(self.space, 1.0), latency=measured)

    def base_state(self) -> dict[str, torch.Tensor]:
        """The base model's weights (what the driver puts in Ray's object store)."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def seed_cache(self, candidates: Sequence[Candidate]) -> int:
        """Pre-fill the evaluation cache from stored candidates (resume); returns how many."""
        for cand in candidates:
            self._cache[cand.policy.key()] = cand.metrics
        return len(candidates)


def build_latency_model(cfg: SearchConfig) -> tuple[LatencyModel, int]:
    """The configured device's latency model (or ``device.latency_model``) and batch size."""
    from prunepilot.hw_models.devices import load_device

    device = load_device(cfg.device.name)
    name = cfg.device.latency_model or device.latency_model
    settings = dict(device.settings if name == device.latency_model else {})
    settings.update(cfg.device.settings)
    return get_latency_model(name, **settings), cfg.device.batch_size or device.batch_size


def config_key(cfg: SearchConfig) -> str:
    """Hash of what determines an evaluator (model, data, device, evaluation, seed); without depth
    (``evaluation.depth`` false), the key of configs from before the field existed."""
    width_only = None if cfg.evaluation.depth else {"evaluation": {"depth"}}
    data = cfg.model_dump(mode="json", include={"model", "data", "device", "evaluation", "seed"}, exclude=width_only)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


_EVALUATORS: dict[str, Evaluator] = {}


def get_evaluator(
    cfg: SearchConfig, base_state: Mapping[str, torch.Tensor] | None = None, fit: LatencyFit | None = None
) -> Evaluator:
    """This process's evaluator for ``cfg`` (built once, then reused by every trial here)."""
    key = config_key(cfg)
    ev = _EVALUATORS.get(key)
    if ev is None:
        ev = Evaluator(cfg, base_state)
        _EVALUATORS.clear()  # one search per process at a time: free the previous model
        _EVALUATORS[key] = ev
    if fit is not None:
        ev.fit = fit
    return ev
