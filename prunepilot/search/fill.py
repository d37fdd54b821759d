"""Budget fill: widen the search's best policy until it uses the latency budget.

A search's best candidate within the budget can sit far under it: the in-loop predictor
over-predicts, a strategy aims at ``budget / (1 + margin)``, or the strategy simply did not
propose anything wider. A user who asked for 120 ms and gets a 60 ms model has left accuracy on
the table. After the search (:func:`prunepilot.search.runner.finish`), when the best candidate's
figure is under ``evaluation.fill_below`` of the budget, :func:`fill_policy` widens it along

    keep(s) = keep + s * (1 - keep)        (every group; removed blocks stay removed)

to the largest ``s`` whose latency is within the budget. ``s`` is found on the fast predictor,
corrected by the ratio of the best's own figure to its prediction, then the widened policy is
timed the way the search's final figures are (the device's measured latency model where it
measures, else its prediction); a timing over the budget, or under ``fill_below`` of it, re-aims
with the new ratio, at most ``FILL_TRIES`` timings, and the widest timed within the budget wins.
The timings bracket ``s``: the widest scale timed within the budget and the narrowest timed over
it. A re-aim at or past a scale timed over the budget, or back at the best's own widths before
anything fitted, or after two timings over it in a row
(on a shared CPU latency is neither smooth nor monotonic in width, and a corrected predictor can
keep aiming just over the budget), bisects the bracket instead.
The widened policy is then scored like any candidate and stored (strategy
``fill``, ``extra.filled_from``); the pick stays the most accurate candidate within the budget, so
a widened policy that scores lower changes nothing but is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from prunepilot.hw_models.base import LatencyResult
from prunepilot.pruning import PruningPolicy
from prunepilot.search.records import Candidate, Measurement

if TYPE_CHECKING:
    from prunepilot.search.evaluator import Evaluator
    from prunepilot.search.store import RunStore

#: timings of widened policies at most, per fill
FILL_TRIES = 4
#: bisection steps on the predictor per try
BISECT_STEPS = 12

PolicyTimer = Callable[[PruningPolicy], Measurement]


@dataclass(frozen=True)
class Fill:
    """A widened policy within the budget: its scale ``s`` on the path to full width, its latency
    as timed (``timed.latency_model`` names the model that timed it) and the timings it took."""

    policy: PruningPolicy
    scale: float
    timed: Measurement
    tries: int


def widened(ev: Evaluator, policy: PruningPolicy, scale: float) -> PruningPolicy:
    """``policy`` with every group's keep ratio moved ``scale`` of the way to full width."""
    ratios = {g: min(1.0, r + scale * (1.0 - r)) for g, r in policy.keep_ratios.items()}
    return ev.make_policy(ratios, policy.removed_blocks, filled_scale=scale)


def figure_ms(cand: Candidate) -> float:
    """The candidate's final latency: measured after the search where it was, else its own."""
    return cand.measured.latency_ms if cand.measured is not None else cand.metrics.latency_ms


def fill_policy(
    ev: Evaluator,
    best: Candidate,
    budget_ms: float,
    time_policy: PolicyTimer,
    tries: int = FILL_TRIES,
    enough: float = 0.9,
    trace: list[tuple[float, float]] | None = None,
) -> Fill | None:
    """The widest widening of ``best``'s policy whose timed latency is within ``budget_ms``, or
    None (no widening fits, or the widest that fits is ``best``'s own widths).

    Each try aims on the predictor corrected by the error last seen, and is timed. A timing over
    the budget re-aims lower; one within the budget but under ``enough`` of it (the device ran
    faster than the correction said) re-aims higher; the widest policy timed within the budget wins.
    ``trace``, when given, receives every ``(scale, timed ms)`` in order.
    """

    def predict(policy: PruningPolicy) -> float:
        return ev.predict_latency_ms(policy.channels, policy.removed_blocks)

    def aim(bias: float) -> float:
        if bias * predict(widened(ev, best.policy, 1.0)) <= budget_ms:
            return 1.0
        lo, hi = 0.0, 1.0
        for _ in range(BISECT_STEPS):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if bias * predict(widened(ev, best.policy, mid)) <= budget_ms else (lo, mid)
        return lo

    own = predict(best.policy)
    bias = figure_ms(best) / own if own > 0 else 1.0  # the predictor's error at the best, corrected for
    found: Fill | None = None
    timed_widths: set[tuple[int | str, ...]] = set()
    hi: float | None = None  # narrowest scale timed over the budget
    # (the widest timed within it is ``found.scale``; 0 before anything fitted: the best itself)
    overs = 0  # consecutive timings over the budget
    for _ in range(tries):
        scale = aim(bias)
        lo = found.scale if found is not None else 0.0
        if found is not None and scale <= lo:
            break  # re-aimed no wider than a widening already within the budget
        if hi is not None and (
            overs >= 2 or scale >= hi or widened(ev, best.policy, scale).channels == best.policy.channels
        ):  # the corrected predictor keeps missing, aims past a timing over, or back at the best: bisect
            scale = (lo + hi) / 2
        policy = widened(ev, best.policy, scale)
        key = policy.key()
        if scale <= 0.0 or policy.channels == best.policy.channels or key in timed_widths:
            break  # nothing wider than the best, or the bracket has narrowed below one channel
        timed_widths.add(key)
        timed = time_policy(policy)
        if trace is not None:
            trace.append((scale, float(timed.latency_ms)))
        if timed.latency_ms <= budget_ms:
            found, overs = Fill(policy, scale, timed, len(timed_widths)), 0
            if timed.latency_ms >= enough * budget_ms or scale >= 1.0:
                break
        else:
            hi, overs = (scale if hi is None else min(hi, scale)), overs + 1
        pred = predict(policy)  # re-aim with the error seen here
        bias = timed.latency_ms / pred if pred > 0 else bias * timed.latency_ms / budget_ms
    return None if found is None else replace(found, tries=len(timed_widths))


def fill_budget(
    store: RunStore, ev: Evaluator, budget_ms: float, fill_below: float, time_policy: PolicyTimer, seed: int
) -> dict[str, Any] | None:
    """Widen the best candidate within the budget when its final latency is under ``fill_below``
    of the budget; the widened policy scored, stored (strategy ``fill``) with its timing. Returns
    what ``run.json`` records under ``fill`` (None: nothing to fill, or filling was off)."""
    from prunepilot.search.pareto import best_within_budget

    best = best_within_budget(store.ok(), budget_ms)
    if fill_below <= 0 or best is None or figure_ms(best) >= fill_below * budget_ms:
        return None
    done = [c for c in store.ok() if c.trial == "fill" and c.extra.get("filled_from") == best.id]
    if done:  # a resumed run that finished before: that widening is stored already
        return {"from": best.id, "from_budget_use": figure_ms(best) / budget_ms, "filled": done[0].id, "resumed": True}
    trace: list[tuple[float, float]] = []
    found = fill_policy(ev, best, budget_ms, time_policy, enough=fill_below, trace=trace)
    record: dict[str, Any] = {
        "from": best.id,
        "from_budget_use": figure_ms(best) / budget_ms,
        "timed": [{"scale": sc, "latency_ms": ms} for sc, ms in trace],  # every widening timed, in order
    }
    if found is None:
        return {**record, "filled": None}
    # where the search times its candidates on the device, the fill's timing is the in-loop figure too
    # (timing it again would cost a full measurement and could disagree with the figure kept)
    timing = None
    if ev.times_in_loop:
        timing = LatencyResult(ms=found.timed.latency_ms, kind="measured", model_name=found.timed.latency_model,
                               cv=found.timed.cv, details={"fill": True})  # fmt: skip
    metrics = ev.evaluate(found.policy, latency=timing)
    index = sum(1 for c in store.ok() if c.trial == "fill")
    cand = Candidate.new(
        trial="fill",
        index=index,
        strategy="fill",
        seed=seed,
        policy=found.policy,
        metrics=metrics,
        budget_ms=budget_ms,
        extra={"filled_from": best.id, "fill_scale": found.scale},
        cached=ev.last_cached,
    )
    store.append(cand)
    if metrics.latency_kind == "predicted":
        store.add_measurements({cand.id: found.timed})
    return {**record, "filled": cand.id, "scale": found.scale, "timings": found.tries,
            "latency_ms": found.timed.latency_ms, "latency_model": found.timed.latency_model,
            "accuracy": metrics.accuracy, "from_accuracy": best.metrics.accuracy}  # fmt: skip


#: the trial name of the uniform candidate at the budget
UNIFORM_TRIAL = "uniform-at-budget"
#: keep-ratio step of the uniform policies tried, widest first
UNIFORM_STEP = 0.05
#: uniform policies timed at most
UNIFORM_TRIES = 5
#: the widest tried is the widest the corrected predictor puts within this much over the budget
UNIFORM_SLACK = 0.15


def uniform_at_budget(
    store: RunStore, ev: Evaluator, budget_ms: float, time_policy: PolicyTimer, seed: int
) -> dict[str, Any] | None:
    """The widest uniform policy timed within the budget, scored and stored as a candidate.

    Uniform keep ratios on a grid of :data:`UNIFORM_STEP` from full width down to the lower
    bound are tried widest first, from the widest the predictor (corrected by its error at the
    all-lower-bound policy) puts within :data:`UNIFORM_SLACK` over the budget, each timed as the
    final figures are, at most :data:`UNIFORM_TRIES`; the first timed within the budget is scored
    like any candidate and stored (strategy ``uniform``, trial :data:`UNIFORM_TRIAL`,
    ``extra.uniform_ratio``). Stepping down rather than bisecting: on a CPU latency need not be
    monotonic in width (a kernel change can make keep 0.4 slower than keep 0.5), and the widest
    that fits is what a user pruning uniformly would ship. Returns what ``run.json`` records under
    ``uniform_at_budget`` (``candidate`` None: none was timed within the budget).
    """
    done = [c for c in store.ok() if c.trial == UNIFORM_TRIAL]
    if done:  # a resumed run that finished before
        return {"candidate": done[0].id, "uniform_ratio": done[0].extra.get("uniform_ratio"), "resumed": True}
    lower = ev.cfg.evaluation.lower_bound
    n = len(ev.space.groups)

    def predict(policy: PruningPolicy) -> float:
        return ev.predict_latency_ms(policy.channels, policy.removed_blocks)

    floor = ev.make_policy([lower] * n)
    own = predict(floor)
    bias = ev.in_loop_latency_ms(floor) / own if own > 0 else 1.0  # the predictor's error at the floor
    steps = int((1.0 - lower) / UNIFORM_STEP + 1e-9)
    grid, seen = [], set()
    for ratio in [1.0 - k * UNIFORM_STEP for k in range(steps + 1)] + [lower]:
        policy = ev.make_policy([max(lower, ratio)] * n)
        if policy.key() not in seen:
            seen.add(policy.key())
            grid.append((max(lower, ratio), policy))
    first = next((i for i, (_r, pol) in enumerate(grid) if bias * predict(pol) <= (1 + UNIFORM_SLACK) * budget_ms),
                 len(grid) - 1)  # fmt: skip
    record: dict[str, Any] = {"timed": []}
    for ratio, policy in grid[first : first + UNIFORM_TRIES]:
        timed = time_policy(policy)
        record["timed"].append({"uniform_ratio": ratio, "latency_ms": timed.latency_ms})
        if timed.latency_ms > budget_ms:
            continue
        timing = None
        if ev.times_in_loop:  # the in-loop figure is the timing taken here, as for the budget fill
            timing = LatencyResult(ms=timed.latency_ms, kind="measured", model_name=timed.latency_model,
                                   cv=timed.cv, details={"uniform_at_budget": True})  # fmt: skip
        metrics = ev.evaluate(policy, latency=timing)
        cand = Candidate.new(trial=UNIFORM_TRIAL, index=0, strategy="uniform", seed=seed, policy=policy,
                             metrics=metrics, budget_ms=budget_ms, extra={"uniform_ratio": ratio},
                             cached=ev.last_cached)  # fmt: skip
        store.append(cand)
        if metrics.latency_kind == "predicted":
            store.add_measurements({cand.id: timed})
        return {**record, "candidate": cand.id, "uniform_ratio": ratio, "latency_ms": timed.latency_ms,
                "latency_model": timed.latency_model, "accuracy": metrics.accuracy}  # fmt: skip
    return {**record, "candidate": None}


def policy_timer(ev: Evaluator, meter: str | None) -> PolicyTimer:
    """How a widened policy is timed: as the search's final figures are
    (:func:`prunepilot.search.remeasure.policy_meter`), else by the device's latency model itself
    (measured where it measures, predicted where it predicts)."""
    from prunepilot.search.remeasure import policy_meter

    found = policy_meter(ev, meter)
    if found is not None:
        return found

    def own(policy: PruningPolicy) -> Measurement:
        res = ev.measure_latency(None, policy.channels, policy.removed_blocks)
        return Measurement(float(res.ms), res.cv, res.model_name)

    return own
