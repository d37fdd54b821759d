"""Re-measure predicted latencies on the device after the search (both figures are kept).

Which figures: every front point and then the best candidate within the budget, as long as its
latency is only predicted (a point measured over the budget drops out of the pick, so the next
best is measured in turn). With what: the search's own measured latency model when the device
measures and the in-loop latency was predicted (:mod:`prunepilot.search.inloop`; every front
point), else ``device.remeasure_with`` (``evaluation.remeasure_top`` front points, most accurate
first). Candidates of one policy share its measurement. :func:`budget_use` is what ``run.json``
records of the best candidate within the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prunepilot.pruning import PruningPolicy
from prunepilot.search.records import Candidate, Measurement

if TYPE_CHECKING:
    from prunepilot.search.evaluator import Evaluator

#: At most this many candidates are measured in turn while looking for the best within the budget.
BEST_TRIES = 10

Meter = Callable[[Candidate], Measurement]
PolicyMeter = Callable[[PruningPolicy], Measurement]


def policy_meter(ev: Evaluator, meter: str | None) -> PolicyMeter | None:
    """How to time a policy after the search: the device's own model when the in-loop latency was
    predicted on a measured device, else ``meter`` (``device.remeasure_with``; None: no timing).

    On the device's own model with ``evaluation.remeasure_timing: paired`` (the default) and the
    base's latency at search start known (:attr:`Evaluator.base_latency_ms`), the policy's model
    is timed beside the base (:meth:`Evaluator.anchored_latency`): the figure is the median ratio
    times the base as it was when the budget was set, named ``<device model>~anchored``."""
    if ev.in_loop is not None:  # set only for a measured device: its own model times the candidates
        latency = ev.latency
    elif meter:
        from prunepilot.hw_models.registry import get_latency_model

        latency = get_latency_model(str(meter))
    else:
        return None

    paired = (
        ev.in_loop is not None and ev.base_latency_ms is not None and ev.cfg.evaluation.remeasure_timing == "paired"
    )

    def time_it(policy: PruningPolicy) -> Measurement:
        model = ev.prune(policy)
        if paired:
            res = ev.anchored_latency(model, policy.channels, policy.removed_blocks, anchor_ms=ev.base_latency_ms)
        else:
            res = latency.measure_ms(model, ev.input_shape, ev.batch_size)
        return Measurement(float(res.ms), res.cv, res.model_name)

    return time_it


def meter_for(ev: Evaluator, meter: str | None) -> Meter | None:
    """:func:`policy_meter` for candidates; measurements are shared by candidates of the same policy."""
    time_it = policy_meter(ev, meter)
    if time_it is None:
        return None
    measured: dict[tuple[int | str, ...], Measurement] = {}

    def once(cand: Candidate) -> Measurement:
        key = cand.policy.key()
        if key not in measured:
            measured[key] = time_it(cand.policy)
        return measured[key]

    return once


def remeasure_front(
    front: Sequence[Candidate], ev: Evaluator, meter: str | None, top: int, measure: Meter | None = None
) -> dict[str, Measurement]:
    """Measure the front candidates whose latency was predicted; by candidate id.

    Every one when the in-loop latency was predicted on the measured device itself; else up to
    ``top``, the most accurate first, with ``meter`` (``device.remeasure_with``; None: nothing).
    The store keeps the result beside the candidates (:meth:`RunStore.add_measurements`), so every
    later front carries ``metrics.measured_latency_ms`` next to the predicted figure.
    """
    predicted = sorted((c for c in front if c.metrics.latency_kind == "predicted"), key=lambda c: -c.metrics.accuracy)
    if ev.in_loop is None:
        predicted = predicted[: max(0, top)]
    measure = measure or meter_for(ev, meter)
    if not predicted or measure is None:
        return {}
    return {cand.id: measure(cand) for cand in predicted}


def remeasure_best(
    candidates: Iterable[Candidate], budget_ms: float, ev: Evaluator, meter: str | None, measure: Meter | None = None
) -> dict[str, Measurement]:
    """Measure the best candidate within ``budget_ms`` while its latency is only predicted.

    The pick (:func:`~prunepilot.search.pareto.best_within_budget`) judges measured figures where
    there are any, so one measured over the budget gives way to the next, which is measured in
    turn (at most :data:`BEST_TRIES`). Candidates of a measured policy all get its figure.
    """
    from prunepilot.search.pareto import best_within_budget

    measure = measure or meter_for(ev, meter)
    cands = list(candidates)
    out: dict[str, Measurement] = {}
    if measure is None:
        return out
    for _ in range(BEST_TRIES):
        best = best_within_budget(cands, budget_ms)
        if best is None or best.measured is not None or best.metrics.latency_kind != "predicted":
            break
        m = measure(best)
        key = best.policy.key()
        same = [c for c in cands if c.policy.key() == key]
        out.update({c.id: m for c in same})
        cands = [c.with_measurement(m) if c.policy.key() == key else c for c in cands]
    return out


def budget_use(candidates: Iterable[Candidate], budget_ms: float) -> dict[str, Any] | None:
    """The best candidate within the budget, as ``run.json`` records it (None: none fits).

    ``budget_use`` is its measured latency over the budget (its only figure when it was never
    measured: ``budget_use_of`` says which); ``predicted_error`` is predicted / measured - 1.
    """
    from prunepilot.search.pareto import best_within_budget

    best = best_within_budget(list(candidates), budget_ms)
    if best is None:
        return None
    m = best.metrics
    measured = best.measured.latency_ms if best.measured is not None else None
    if measured is None and m.latency_kind == "measured":
        measured = m.latency_ms
    predicted = m.latency_ms if m.latency_kind == "predicted" else None
    figure = measured if measured is not None else m.latency_ms
    return {
        "id": best.id,
        "accuracy": m.accuracy,
        "latency_ms": m.latency_ms,
        "latency_kind": m.latency_kind,
        "latency_model": m.latency_model,
        "measured_latency_ms": measured,
        "budget_ms": budget_ms,
        "budget_use": figure / budget_ms if budget_ms > 0 else None,
        "budget_use_of": "measured" if measured is not None else "predicted",
        "predicted_error": predicted / measured - 1.0 if predicted is not None and measured else None,
    }
