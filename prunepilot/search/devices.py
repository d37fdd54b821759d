"""Several devices from one search: ``device.also``, a latency on each for every candidate, a front per device.

A policy's accuracy does not depend on the device; its latency does. With ``device.also: [rpi4,
phone]`` every candidate gets, beside its latency on the search's own device (``device.name``), a
figure on each other device, in ``metrics.devices[NAME]``
(:class:`~prunepilot.search.records.DeviceLatency`, tagged with its kind and latency model):

* a device whose latency model **predicts** (``macs``, ``roofline``, ``lut``, ``learned``...): from
  the widths, in every trial (well under 1 ms a candidate);
* a device that **measures** (``torch-cpu``, ``onnxruntime-cpu``, ``remote``...): never timed in
  the loop. When the search starts the driver calibrates on it the same kind of in-loop predictor as
  for a measured search device (:func:`prunepilot.search.inloop.calibrate`:
  ``evaluation.in_loop_predictor``, lut on torch-cpu else the MACs/bytes fit, from
  ``evaluation.fit_points`` uniform models and a few random check policies measured on it), ships it
  to the trials and tags the figures ``predicted`` with its label (``torch-cpu~fit``). After the
  search that device's own front (from those figures) is measured point by point, then the best
  candidate within its budget while it is only predicted, as :mod:`prunepilot.search.remeasure` does
  for the search's device; the figures land in ``remeasured-devices.json``
  (:attr:`Candidate.measured_on <prunepilot.search.records.Candidate.measured_on>`).

**Budgets.** Each device's budget is the search's budget as a share of the base model's latency
(``budget.fraction``, or ``budget.ms`` over the base's latency on the search's device) times the
base's latency on that device (measured there, on a measured device). ``run.json`` records under
``devices`` each device's latency model, batch size, base latency, reachable minimum, budget, the
budget proposals aim at there (``trial_budget_ms``: less ``evaluation.budget_margin``, never below
the reachable minimum), in-loop predictor with its calibration and, at the end, its best candidate
within the budget.

**Aiming.** Strategies that project proposals into the budget aim at every device's budget in
turn (:meth:`TrialContext.aim <prunepilot.search.strategies.context.TrialContext.aim>`, from
:meth:`DeviceFigures.targets`): ``random``'s trial ``i`` at device ``i`` modulo the devices (the
search's own first), ``optuna-tpe``'s (and ``optuna-nsga2``'s with ``project``) at one drawn from its
proposal; the proposal is projected into that device's ``trial_budget_ms`` with that device's own
latency estimate, so each device's front gets candidates near its budget. A device whose budget is
out of reach is left out of the turns (every proposal aimed there would be the same narrowest
policy); its front is drawn from the candidates aimed at the others. The other strategies (the
agents, one-shot, knapsack, uniform) aim at the search's own device only; their candidates still
carry every device's figure.
The candidates' ``budget_ms``, the Tune ``score`` a sampler learns from and ``front.json`` stay the
search's own device's.

**Reading.** :func:`device_view` gives a run's candidates as seen on one device (:func:`on_device`:
that device's figures in ``metrics.latency_*``, its measurement as ``measured``, its budget), so
fronts, tables, plots and exports (``prunepilot pareto RUN --device NAME``) work on them unchanged.

Example:
    >>> view = device_view(RunStore("runs/tour"), "rpi4")                     # doctest: +SKIP
    >>> best_within_budget(view.candidates, view.budget_ms).metrics.device     # doctest: +SKIP
    'rpi4'
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prunepilot.errors import ConfigError, one_of
from prunepilot.hw_models.base import LatencyModel
from prunepilot.search.config import DeviceSection, SearchConfig
from prunepilot.search.records import Candidate, DeviceLatency, Metrics

if TYPE_CHECKING:
    from prunepilot.pruning import PruningSpace
    from prunepilot.search.evaluator import Evaluator
    from prunepilot.search.inloop import InLoopPredictor
    from prunepilot.search.plots import FrontLayers
    from prunepilot.search.store import RunStore
    from prunepilot.search.strategies.context import DeviceTarget

__all__ = [
    "DeviceFigures",
    "DeviceView",
    "device_budgets",
    "device_evaluator",
    "device_latency_model",
    "device_view",
    "finish_devices",
    "front_layers",
    "on_device",
    "prepare_devices",
    "run_devices",
]


def device_latency_model(cfg: SearchConfig, name: str) -> tuple[LatencyModel, int]:
    """The latency model of device ``name`` (its own model and settings) and its batch size
    (``device.batch_size`` when set, else the device's own)."""
    from prunepilot.hw_models.devices import load_device

    device = load_device(name)
    return device.build(), cfg.device.batch_size or device.batch_size


class DeviceFigures:
    """The in-loop latency of candidates on each of ``device.also`` (what :meth:`Evaluator.score
    <prunepilot.search.evaluator.Evaluator.score>` puts in ``metrics.devices``).

    Predicting devices answer from the widths; a measuring one answers once the driver has set its
    in-loop predictor (:func:`prepare_devices`; trials get it through :meth:`to_json` and
    :meth:`restore`) and raises before that. The budgets proposals aim at on each device
    (:attr:`budgets`, :meth:`targets`) travel the same way.
    """

    def __init__(self, cfg: SearchConfig) -> None:
        from prunepilot.hw_models.devices import load_device
        from prunepilot.hw_models.registry import latency_model_class

        self.names = tuple(cfg.device.also)
        #: What answers for each device: its latency model, or a measuring device's in-loop predictor.
        self.models: dict[str, tuple[LatencyModel, int]] = {}
        #: Measuring devices (their latency model is built only where they are measured: the driver).
        self.measuring: list[str] = []
        self.predictors: dict[str, InLoopPredictor] = {}
        #: The budget proposals aim at on each device (its ``trial_budget_ms``), set by the driver
        #: (:meth:`set_budgets`); empty: strategies aim at the search's own device only.
        self.budgets: dict[str, float] = {}
        for name in cfg.device.also:
            if latency_model_class(load_device(name).latency_model).requires_model:
                self.measuring.append(name)
            else:
                self.models[name] = device_latency_model(cfg, name)

    def set_predictor(self, name: str, predictor: InLoopPredictor) -> None:
        """Give the measuring device ``name`` its in-loop predictor."""
        self.predictors[name] = predictor
        self.models[name] = (predictor, predictor.batch_size)

    def latencies(
        self, space: PruningSpace, widths: Mapping[str, int], removed: Sequence[str] = ()
    ) -> dict[str, DeviceLatency]:
        """Each device's latency at ``widths`` without the ``removed`` blocks, by name (empty without
        ``device.also``)."""
        waiting = sorted(set(self.measuring) - set(self.predictors))
        if waiting:
            raise RuntimeError(
                f"device.also {waiting} measure latency and have no in-loop predictor yet; the search's driver "
                "calibrates them (prunepilot.search.devices.prepare_devices): run the search, or call that first"
            )
        out = {}
        for name in self.names:
            model, batch = self.models[name]
            res = model.predict_ms(space, widths, batch, removed)
            out[name] = DeviceLatency(float(res.ms), str(res.kind), res.model_name)
        return out

    def predict_ms(
        self, space: PruningSpace, name: str, widths: Mapping[str, int], removed: Sequence[str] = ()
    ) -> float:
        """Device ``name``'s latency at ``widths`` without the ``removed`` blocks (what :meth:`latencies`
        gives it, the figure only)."""
        model, batch = self.models[name]
        return float(model.predict_ms(space, widths, batch, removed).ms)

    def set_budgets(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """The budgets proposals aim at, from ``run.json``'s ``devices`` records (:func:`device_budgets`:
        ``trial_budget_ms``, or ``budget_ms`` in runs from before it existed).

        A device whose budget is below its reachable minimum (``budget_reachable: false``) is left
        out: every proposal aimed there would be the same fastest policy, a turn lost to the others;
        its front still holds every candidate, on its own latency."""
        self.budgets = {
            n: float(r.get("trial_budget_ms", r["budget_ms"]))
            for n, r in records.items()
            if r.get("budget_reachable", True)
        }

    def targets(self, space: PruningSpace) -> tuple[DeviceTarget, ...]:
        """Each device's budget with its latency estimate, in ``device.also``'s order, for strategies
        that aim proposals at every device (:attr:`TrialContext.targets
        <prunepilot.search.strategies.context.TrialContext.targets>`); empty before :meth:`set_budgets`."""
        from prunepilot.search.strategies.context import DeviceTarget

        def estimate(name: str) -> Callable[[Mapping[str, int], Sequence[str]], float]:
            def ms(widths: Mapping[str, int], removed: Sequence[str] = ()) -> float:
                return self.predict_ms(space, name, widths, removed)

            return ms

        return tuple(DeviceTarget(n, self.budgets[n], estimate(n)) for n in self.names if n in self.budgets)

    def to_json(self) -> dict[str, Any]:
        """The measuring devices' in-loop predictors and every device's aim budget, by name (JSON, for
        trials: ``{"predictors": ..., "budgets": ...}``; empty without ``device.also``)."""
        if not self.predictors and not self.budgets:
            return {}
        return {"predictors": {name: p.to_json() for name, p in self.predictors.items()}, "budgets": self.budgets}

    def restore(self, data: Mapping[str, Any] | None) -> None:
        """Set the predictors and budgets :meth:`to_json` gave (no profiling, no measurement)."""
        from prunepilot.search.inloop import InLoopPredictor

        data = data or {}
        for name, predictor in (data.get("predictors") or {}).items():
            self.set_predictor(name, InLoopPredictor.from_json(predictor))
        self.budgets = {n: float(ms) for n, ms in (data.get("budgets") or {}).items()}

    def restore_from_run(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """On resume: the predictors and budgets ``run.json``'s ``devices`` records hold
        (:func:`prepare_devices`, :func:`device_budgets`)."""
        from prunepilot.search.inloop import InLoopPredictor

        for name, rec in records.items():
            predictor = (rec.get("in_loop_latency") or {}).get("predictor")
            if predictor:
                self.set_predictor(name, InLoopPredictor.from_json(predictor))
        self.set_budgets(records)


def device_evaluator(ev: Evaluator, name: str) -> Evaluator:
    """``ev`` on device ``name``: the same base model, space and data (shared, not copied), that
    device's latency model and batch size, no fit, no in-loop predictor, no cache. For calibrating
    and measuring on it with the evaluator's own methods; never for scoring candidates."""
    view = copy.copy(ev)
    view.cfg = ev.cfg.model_copy(update={"device": DeviceSection(name=name, batch_size=ev.cfg.device.batch_size)})
    view.latency, view.batch_size = device_latency_model(ev.cfg, name)
    view.fit, view.in_loop, view.fit_measurements, view._cache = None, None, [], {}
    view.anchor_ms = view.base_latency_ms = None  # the search's device's, not this one's
    view.devices = DeviceFigures(view.cfg)
    return view


def prepare_devices(cfg: SearchConfig, ev: Evaluator) -> dict[str, dict[str, Any]]:
    """Driver-side, before the base model is scored: each device's base latency and reachable
    minimum and, for a measuring one, its in-loop predictor (set in ``ev.devices``). Budgets follow
    (:func:`device_budgets`)."""
    from prunepilot.pruning import PruningPolicy
    from prunepilot.search.inloop import calibrate

    records: dict[str, dict[str, Any]] = {}
    full, lowest = ev.space.full_widths(), PruningPolicy.uniform(ev.space, cfg.evaluation.lower_bound).channels
    for name in cfg.device.also:
        view = device_evaluator(ev, name)
        rec: dict[str, Any] = {"latency_model": view.latency.name, "batch_size": view.batch_size}
        if view.latency.requires_model:
            base, low = view.calibrate_fit()
            predictor = calibrate(view)
            ev.devices.set_predictor(name, predictor)
            in_loop = {"mode": "predicted", "predictor": predictor.to_json(), "calibration": predictor.record}
        else:
            base, low = (view.latency.predict_ms(ev.space, w, view.batch_size) for w in (full, lowest))
            in_loop = {"mode": "device-predicts"}
        rec.update(base_latency_ms=float(base.ms), base_latency_kind=str(base.kind))
        rec.update(base_latency_model=base.model_name, reachable_min_ms=float(low.ms), in_loop_latency=in_loop)
        records[name] = rec
    return records


def device_budgets(
    records: Mapping[str, dict[str, Any]], share: float, ev: Evaluator | None = None
) -> dict[str, dict[str, Any]]:
    """``records`` with each device's budget: ``share`` (the search's budget over its base latency)
    of the base's latency on it. A budget below the device's reachable minimum (every group at the
    lower bound) is kept and flagged ``budget_reachable: false`` (the driver says so; ``prunepilot
    pareto --device NAME --budget MS`` picks within another).

    With ``ev`` (the driver's, its devices' in-loop predictors set), also the budget proposals aim
    at there, ``trial_budget_ms``: the budget less ``evaluation.budget_margin`` (``auto``: that
    device's in-loop predictor's largest under-prediction; 0 on a predicting device), never below
    the reachable minimum on its in-loop estimate (:func:`prunepilot.search.inloop.trial_budget`, as
    for the search's own device)."""
    from prunepilot.pruning import PruningPolicy
    from prunepilot.search.inloop import trial_budget

    out = {}
    for name, rec in records.items():
        budget = share * float(rec["base_latency_ms"])
        reachable = budget >= float(rec["reachable_min_ms"])
        out[name] = {**rec, "budget_share": share, "budget_ms": budget, "budget_reachable": reachable}
        if ev is not None:  # the fastest proposal: every group at the lower bound, with depth every block removed
            evaluation = ev.cfg.evaluation
            lowest = PruningPolicy.uniform(ev.space, evaluation.lower_bound).channels
            gone = ev.space.block_names if evaluation.depth else ()
            floor = ev.devices.predict_ms(ev.space, name, lowest, gone)
            aim = trial_budget(budget, evaluation.budget_margin, ev.devices.predictors.get(name), floor)
            out[name]["trial_budget_ms"] = float(aim["trial_budget_ms"])
    return out


def finish_devices(store: RunStore, ev: Evaluator, records: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """After the search: measure each measuring device's front points (then its best candidate within
    its budget while only predicted) into the store; ``records`` with each device's
    ``best_within_budget`` (:func:`~prunepilot.search.remeasure.budget_use`)."""
    from prunepilot.search.pareto import pareto_front
    from prunepilot.search.remeasure import budget_use, meter_for, remeasure_best, remeasure_front

    out = {}
    for name, rec in records.items():
        budget = float(rec["budget_ms"])

        def seen() -> list[Candidate]:
            return [p for c in store.ok() if (p := on_device(c, name, budget)) is not None]  # noqa: B023

        predictor = ev.devices.predictors.get(name)
        if predictor is not None:
            view = device_evaluator(ev, name)
            view.in_loop = predictor  # meter_for: measure on the device itself
            view.base_latency_ms = rec.get("base_latency_ms")  # paired timing against this device's base
            measure = meter_for(view, None)
            store.add_measurements(remeasure_front(pareto_front(seen()), view, None, 0, measure), device=name)
            store.add_measurements(remeasure_best(seen(), budget, view, None, measure), device=name)
        out[name] = {**rec, "best_within_budget": budget_use(seen(), budget)}
    return out


def on_device(cand: Candidate, device: str, budget_ms: float | None) -> Candidate | None:
    """``cand`` as seen on ``device`` of ``device.also``: its figures there in ``metrics.latency_*``
    (``metrics.device`` names it), its measurement there as ``measured``, ``budget_ms`` as its budget.
    None when it has no figure there."""
    figure = cand.metrics.devices.get(device)
    if figure is None:
        return None
    metrics = dataclasses.replace(
        cand.metrics,
        latency_ms=figure.latency_ms,
        latency_kind=figure.latency_kind,
        latency_model=figure.latency_model,
        latency_cv=None,
        device=device,
    )
    return dataclasses.replace(cand, metrics=metrics, measured=cand.measured_on.get(device), budget_ms=budget_ms)


def run_devices(store: RunStore) -> list[str]:
    """A run's devices: the search's own first, then ``device.also`` as ``run.json`` records them."""
    device = store.read_config().get("device") or {}
    return [str(device.get("name") or DeviceSection().name), *store.devices()]


@dataclass(frozen=True)
class DeviceView:
    """A run seen on one of its devices."""

    name: str
    """The device."""
    primary: bool
    """Whether it is the search's own device (``device.name``)."""
    candidates: list[Candidate]
    """The ``ok`` candidates as seen there (:func:`on_device`), re-measured figures merged in."""
    baseline: list[Candidate]
    """The uniform-pruning curve as seen there."""
    base: Metrics | None
    """The base model's figures there (its measured latency on a measuring device)."""
    budget_ms: float | None
    """The device's budget (or the one asked for)."""
    left_out: int
    """Candidates without a figure on the device (none in a run that recorded it from the start)."""


def device_view(store: RunStore, device: str | None = None, budget_ms: float | None = None) -> DeviceView:
    """``store``'s run seen on ``device`` (None: the search's own), judged on ``budget_ms`` (None: the
    device's budget). Raises :class:`ConfigError` naming the run's devices for one it does not have."""
    names = run_devices(store)
    ok = store.ok()
    if device is None or device == names[0]:
        budget = budget_ms if budget_ms is not None else store.budget_ms()
        return DeviceView(names[0], True, ok, store.baseline(), store.base_metrics(), budget, 0)
    records = store.devices()
    if device not in records:
        raise ConfigError(
            f"run {str(store.dir)!r} has no device {device!r}; its devices are {one_of(names)} (device.name and "
            "device.also of its config); give one of them to --device"
        )
    rec = records[device]
    budget = budget_ms if budget_ms is not None else float(rec["budget_ms"])
    seen = [p for c in ok if (p := on_device(c, device, budget)) is not None]
    baseline = [p for c in store.baseline() if (p := on_device(c, device, budget)) is not None]
    base = store.base_metrics()
    if base is not None:
        kind, model = str(rec.get("base_latency_kind", "?")), str(rec.get("base_latency_model", "?"))
        ms = float(rec["base_latency_ms"])
        base = dataclasses.replace(
            base, latency_ms=ms, latency_kind=kind, latency_model=model, latency_cv=None, device=device
        )
    return DeviceView(device, False, seen, baseline, base, budget, len(ok) - len(seen))


def front_layers(view: DeviceView, front: list[Candidate]) -> FrontLayers:
    """What a picture of ``view``'s ``front`` shows: every candidate, the uniform curve, the base."""
    from prunepilot.search.plots import FrontLayers

    uniform = [c.to_json() for c in view.baseline] or None
    return FrontLayers([c.to_json() for c in view.candidates], [c.to_json() for c in front], uniform, view.base)
