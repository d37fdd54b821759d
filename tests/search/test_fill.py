"""Budget fill (prunepilot/search/fill.py): the best policy is widened to use the budget, timed as
the final figures are, scored and stored; the pick stays the most accurate within the budget."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from search_helpers import tiny_config

import prunepilot.search
from prunepilot.hw_models.base import LatencyResult
from prunepilot.hw_models.measure import TorchCPULatency, batched_input_shape
from prunepilot.pruning import PruningPolicy
from prunepilot.search import fill
from prunepilot.search.config import validate_config
from prunepilot.search.evaluator import Evaluator
from prunepilot.search.records import Candidate, Measurement
from prunepilot.search.store import RunStore


@pytest.fixture(scope="module")
def ev(tmp_path_factory: pytest.TempPathFactory) -> Evaluator:
    return Evaluator(validate_config(tiny_config(tmp_path_factory.mktemp("fill"))))


def candidate(ev: Evaluator, policy: PruningPolicy, ms: float, acc: float = 0.5, index: int = 0) -> Candidate:
    metrics = replace(ev.evaluate(policy), latency_ms=ms, accuracy=acc)
    return Candidate.new(trial="t", index=index, strategy="random", seed=0, policy=policy, metrics=metrics,
                         budget_ms=1.0, extra={}, cached=False)  # fmt: skip


def test_widening_moves_every_group_toward_full_width_and_keeps_removed_blocks(ev: Evaluator) -> None:
    policy = ev.make_policy([0.3, 0.6] + [0.5] * (len(ev.space.groups) - 2))
    assert fill.widened(ev, policy, 0.0).channels == policy.channels
    assert fill.widened(ev, policy, 1.0).channels == ev.space.full_widths()
    half = fill.widened(ev, policy, 0.5)
    for g in ev.space.groups:
        assert half.keep_ratios[g.name] == pytest.approx(
            policy.keep_ratios[g.name] + 0.5 * (1 - policy.keep_ratios[g.name])
        )
        assert policy.channels[g.name] <= half.channels[g.name]


def test_fill_finds_the_widest_widening_within_the_budget_and_reaims_when_timed_over(ev: Evaluator) -> None:
    policy = ev.make_policy([0.3] * len(ev.space.groups))

    def predict(p: PruningPolicy) -> float:
        return ev.predict_latency_ms(p.channels, p.removed_blocks)

    full = predict(fill.widened(ev, policy, 1.0))
    budget = 0.6 * full
    # the device runs 1.25x slower than the predictor at the best, and 1.5x elsewhere: one re-aim
    timings: list[float] = []

    def slow(p: PruningPolicy) -> Measurement:
        timings.append(1.5 * predict(p))
        return Measurement(timings[-1], 0.0, "fake-device")

    best = candidate(ev, policy, 1.25 * predict(policy))
    found = fill.fill_policy(ev, best, budget, slow)
    assert found is not None and found.timed.latency_ms <= budget and found.tries == len(timings) == 2
    assert timings[0] > budget  # aimed with the best's error, timed over: re-aimed with the error seen there
    assert all(found.policy.channels[g] >= policy.channels[g] for g in policy.channels)
    assert found.policy.channels != policy.channels
    # the next widening step would not have fit on the device
    wider = fill.widened(ev, policy, min(1.0, found.scale + 0.05))
    assert 1.5 * predict(wider) > budget or wider.channels == found.policy.channels


def test_a_widening_timed_far_under_the_budget_is_aimed_again_wider(ev: Evaluator) -> None:
    policy = ev.make_policy([0.3] * len(ev.space.groups))

    def predict(p: PruningPolicy) -> float:
        return ev.predict_latency_ms(p.channels, p.removed_blocks)

    budget = 0.6 * predict(fill.widened(ev, policy, 1.0))
    timings: list[float] = []

    def fast(p: PruningPolicy) -> Measurement:  # the device runs at 0.8x the predictor; the best read 1.0x
        timings.append(0.8 * predict(p))
        return Measurement(timings[-1], 0.0, "fake-device")

    best = candidate(ev, policy, predict(policy))
    found = fill.fill_policy(ev, best, budget, fast, enough=0.9)
    assert timings[0] < 0.9 * budget  # aimed with the best's error: far under the budget
    assert found is not None and found.tries == len(timings) == 2
    assert 0.9 * budget <= found.timed.latency_ms <= budget and found.timed.latency_ms == max(timings)
    # without the second aim, the fill would have stopped at the first, narrower widening
    once = fill.fill_policy(ev, best, budget, fast, tries=1)
    assert once is not None and once.scale < found.scale and once.timed.latency_ms < 0.9 * budget


def test_a_device_that_keeps_reading_just_over_the_budget_is_bisected_into_a_fit(ev: Evaluator) -> None:
    # Latency that jumps (as on a shared CPU, where it is not monotonic in width): every widening past
    # 0.4 of the way reads 5% over the budget, whatever the predictor says, so re-aiming with the error
    # seen keeps landing just over it; the timings bracket the scale and bisecting finds a fit.
    policy = ev.make_policy([0.3] * len(ev.space.groups))

    def predict(p: PruningPolicy) -> float:
        return ev.predict_latency_ms(p.channels, p.removed_blocks)

    budget = 0.8 * predict(fill.widened(ev, policy, 1.0))
    step_ms = predict(fill.widened(ev, policy, 0.4))
    assert predict(policy) < step_ms < budget

    def jumpy(p: PruningPolicy) -> Measurement:
        return Measurement(1.05 * budget if predict(p) > step_ms else predict(p), 0.0, "fake-device")

    trace: list[tuple[float, float]] = []
    best = candidate(ev, policy, predict(policy))
    found = fill.fill_policy(ev, best, budget, jumpy, trace=trace)
    assert [ms > budget for _, ms in trace[:2]] == [True, True]  # the corrected predictor missed twice
    assert found is not None and found.timed.latency_ms <= budget and found.scale <= 0.4
    assert found.tries == len(trace) and (found.scale, found.timed.latency_ms) in trace
    overs = [sc for sc, ms in trace if ms > budget]
    assert all(found.scale < sc for sc in overs)  # inside the bracket the timings set
    # its first two tries (re-aims only) stay over the budget: nothing found without the bisection
    assert fill.fill_policy(ev, best, budget, jumpy, tries=2) is None


def test_a_first_widening_timed_far_over_is_bisected_not_abandoned(ev: Evaluator) -> None:
    # The best read 0.3x its prediction, so the first aim is wide and (as wide policies read as
    # predicted) over the budget; corrected by that error, the predictor aims back at the best. The
    # bracket (the best, that widening) is bisected instead of giving up.
    policy = ev.make_policy([0.3] * len(ev.space.groups))

    def predict(p: PruningPolicy) -> float:
        return ev.predict_latency_ms(p.channels, p.removed_blocks)

    budget = predict(policy)

    def timer(p: PruningPolicy) -> Measurement:  # policies predicted over twice the best's read as predicted
        return Measurement((1.0 if predict(p) > 2 * budget else 0.3) * predict(p), 0.0, "fake-device")

    trace: list[tuple[float, float]] = []
    best = candidate(ev, policy, 0.3 * predict(policy))
    found = fill.fill_policy(ev, best, budget, timer, trace=trace)
    assert trace[0][1] > budget and len(trace) >= 2
    assert found is not None and found.timed.latency_ms <= budget and 0 < found.scale < trace[0][0]


def test_nothing_to_fill_when_no_widening_fits(ev: Evaluator) -> None:
    policy = ev.make_policy([0.3] * len(ev.space.groups))
    ms = ev.predict_latency_ms(policy.channels)
    best = candidate(ev, policy, ms)

    def exact(p: PruningPolicy) -> Measurement:
        return Measurement(ev.predict_latency_ms(p.channels), 0.0, "exact")

    assert fill.fill_policy(ev, best, ms, exact) is None  # the budget is the best's own latency


def test_a_search_fills_its_budget_and_records_it(tmp_path: Path) -> None:
    # lower bound 0.25, two random candidates: the best is far under a 90% budget
    cfg = tiny_config(tmp_path, **{"budget.fraction": 0.9, "strategy.evaluations": 2,
                                   "evaluation.uniform_baseline": 0, "evaluation.fill_below": 0.9})  # fmt: skip
    result = prunepilot.search.run(cfg, backend="local", run_dir=tmp_path / "run", progress=False)
    info = RunStore(tmp_path / "run").read_info()
    filled = [c for c in result.candidates if c.strategy == "fill"]
    assert info["fill"]["from_budget_use"] < 0.9
    (cand,) = filled
    assert info["fill"]["filled"] == cand.id and cand.extra["filled_from"] == info["fill"]["from"]
    assert cand.metrics.latency_ms <= result.budget_ms  # the macs device predicts: its figure is the timing
    origin = next(c for c in result.candidates if c.id == cand.extra["filled_from"])
    assert all(cand.policy.channels[g] >= w for g, w in origin.policy.channels.items())
    assert info["best_within_budget"]["budget_use"] >= info["fill"]["from_budget_use"]
    if cand.metrics.accuracy >= origin.metrics.accuracy:
        assert info["best_within_budget"]["id"] == cand.id
    # finishing again (a resumed run) widens nothing twice
    again = prunepilot.search.run(cfg, backend="local", run_dir=tmp_path / "run", progress=False, resume=True)
    assert [c.id for c in again.candidates if c.strategy == "fill"] == [cand.id]
    # off: the same search stores only the strategy's candidates
    off = tiny_config(tmp_path, **{"budget.fraction": 0.9, "strategy.evaluations": 2,
                                   "evaluation.uniform_baseline": 0, "evaluation.fill_below": 0.0})  # fmt: skip
    plain = prunepilot.search.run(off, backend="local", run_dir=tmp_path / "off", progress=False)
    assert {c.strategy for c in plain.candidates} == {"random"} and len(plain.candidates) == 2
    assert "fill" not in json.loads((tmp_path / "off" / "run.json").read_text())


def test_the_widest_uniform_policy_within_the_budget_joins_the_candidates(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, **{"budget.fraction": 0.7, "strategy.evaluations": 2,
                                   "evaluation.uniform_baseline": 0, "evaluation.uniform_at_budget": True})  # fmt: skip
    result = prunepilot.search.run(cfg, backend="local", run_dir=tmp_path / "run", progress=False)
    info = RunStore(tmp_path / "run").read_info()
    (uni,) = [c for c in result.candidates if c.trial == fill.UNIFORM_TRIAL]
    assert uni.strategy == "uniform" and info["uniform_at_budget"]["candidate"] == uni.id
    ratio = uni.extra["uniform_ratio"]
    evaluator = Evaluator(validate_config(cfg))
    assert uni.policy.channels == evaluator.make_policy([ratio] * len(evaluator.space.groups)).channels  # uniform
    assert 0.25 < ratio < 1.0 and uni.metrics.latency_ms <= result.budget_ms  # the macs device: its figure
    # the widest on its grid that fits: the next step wider does not (the macs device predicts: no noise)
    wider = evaluator.make_policy([ratio + fill.UNIFORM_STEP] * len(evaluator.space.groups))
    assert evaluator.predict_latency_ms(wider.channels) > result.budget_ms
    assert info["uniform_at_budget"]["timed"][-1]["uniform_ratio"] == ratio
    again = prunepilot.search.run(cfg, backend="local", run_dir=tmp_path / "run", progress=False, resume=True)
    assert [c.id for c in again.candidates if c.trial == fill.UNIFORM_TRIAL] == [uni.id]  # not twice
    off = {**cfg, "evaluation": {**cfg["evaluation"], "uniform_at_budget": False}}
    plain = prunepilot.search.run(off, backend="local", run_dir=tmp_path / "off", progress=False)
    assert {c.strategy for c in plain.candidates} == {"random"}
    assert "uniform_at_budget" not in RunStore(tmp_path / "off").read_info()


def test_uniform_at_budget_steps_down_past_a_wider_policy_that_reads_over(ev: Evaluator, tmp_path: Path) -> None:
    # a CPU whose latency is not monotonic in width: 0.55 is predicted within the budget but reads
    # over it, as does 0.45; keep 0.5 fits
    budget = ev.predict_latency_ms(ev.make_policy([0.55] * len(ev.space.groups)).channels) * 0.999
    slow = {round(r, 2) for r in (0.6, 0.55, 0.45)}

    def timer(policy: PruningPolicy) -> Measurement:
        ratio = round(next(iter(policy.keep_ratios.values())), 2)
        ms = ev.predict_latency_ms(policy.channels) * (1.5 if ratio in slow else 1.0)
        return Measurement(ms, 0.0, "fake")

    store = RunStore(tmp_path / "run")
    got = fill.uniform_at_budget(store, ev, budget, timer, seed=0)
    assert got is not None and got["uniform_ratio"] == pytest.approx(0.5)
    (cand,) = [c for c in store.ok() if c.trial == fill.UNIFORM_TRIAL]
    assert cand.policy.channels == ev.make_policy([0.5] * len(ev.space.groups)).channels
    ratios = [t["uniform_ratio"] for t in got["timed"]]
    assert ratios == sorted(ratios, reverse=True) and ratios[-1] == pytest.approx(0.5)  # widest first, down to it
    # nothing fits, not even the lower bound (the only one predicted near the budget): no candidate
    none = fill.uniform_at_budget(RunStore(tmp_path / "none"), ev, 1e-9, timer, seed=0)
    assert none is not None and none["candidate"] is None
    assert [t["uniform_ratio"] for t in none["timed"]] == [ev.cfg.evaluation.lower_bound]
    assert not [c for c in RunStore(tmp_path / "none").ok() if c.trial == fill.UNIFORM_TRIAL]


def test_the_floor_latency_for_the_uniform_grid_is_the_in_loop_figure_without_a_score(ev: Evaluator) -> None:
    floor = ev.make_policy([0.25] * len(ev.space.groups))
    assert floor.key() not in ev._cache
    ms = ev.in_loop_latency_ms(floor)
    assert floor.key() not in ev._cache  # not scored, so not cached
    assert ms == pytest.approx(ev.evaluate(floor).latency_ms)  # the figure evaluate gives it
    ev._cache[floor.key()] = replace(ev._cache[floor.key()], latency_ms=123.0)
    assert ev.in_loop_latency_ms(floor) == 123.0  # a scored policy keeps its figure
    del ev._cache[floor.key()]  # the evaluator is the module's


def _steady_cpu(self: TorchCPULatency, model: torch.nn.Module, shape: tuple[int, ...], batch: int) -> LatencyResult:
    """This CPU without its noise: the time is affine in the model's MACs, the same every call."""
    macs, _ = tp.utils.count_ops_and_params(model, torch.zeros(*batched_input_shape(shape, batch)))
    return LatencyResult(ms=0.5 + 1e-5 * float(macs), kind="measured", model_name=self.name, cv=0.0)


def test_on_a_measured_device_the_widening_is_timed_on_the_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the device is measured (no latency model stands in), but steady: on a loaded shared machine the
    # real timings can leave no widening within the budget, and this asserts where the fill is timed
    monkeypatch.setattr(TorchCPULatency, "measure_ms", _steady_cpu)
    cfg = tiny_config(tmp_path, **{
        "model.spec": "simplecnn?width_mult=0.5", "model.train": {"epochs": 1, "lr": 0.05, "seed": 0},
        "device.latency_model": None, "device.settings": {"min_runs": 3, "min_seconds": 0.005, "warmup": 1},
        "budget.fraction": 0.9, "strategy.evaluations": 2, "evaluation.uniform_baseline": 0,
        "evaluation.fill_below": 0.9, "evaluation.in_loop_predictor": "fit",  # the fit is exact on this device
    })  # fmt: skip
    result = prunepilot.search.run(cfg, backend="local", run_dir=tmp_path / "run", progress=False)
    store = RunStore(tmp_path / "run")
    info = store.read_info()
    assert info["fill"]["from_budget_use"] < 0.9 and info["fill"]["filled"] is not None, info["fill"]
    (cand,) = [c for c in store.ok() if c.strategy == "fill"]
    others = {c.metrics.latency_kind for c in store.ok() if c.strategy != "fill"}
    assert {cand.metrics.latency_kind} == others  # in the loop: as every candidate of the search
    # timed on the device, beside the base (evaluation.remeasure_timing: paired), as the final figures are
    assert info["fill"]["latency_model"] == "torch-cpu~anchored" and info["fill"]["timings"] >= 1
    final = cand.measured.latency_ms if cand.measured is not None else cand.metrics.latency_ms
    assert final == info["fill"]["latency_ms"] <= result.budget_ms  # that timing is its final figure, kept


def test_where_candidates_are_timed_in_the_loop_the_fill_is_timed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ev = Evaluator(validate_config(tiny_config(tmp_path, **{"evaluation.fill_below": 0.9})))
    calls: list[int] = []

    class Device:
        """A device whose latency model times models, with no in-loop predictor: every candidate is timed."""

        name = "steady-device"
        requires_model = True

        def measure_ms(self, model: torch.nn.Module, shape: tuple[int, ...], batch: int) -> LatencyResult:
            calls.append(1)
            return _steady_cpu(self, model, shape, batch)  # type: ignore[arg-type]

    ev.latency = Device()  # type: ignore[assignment]
    ev.calibrate_fit()  # the fill aims on the fit, as the driver sets it up for a measured device
    assert ev.times_in_loop
    policy = ev.make_policy([0.3] * len(ev.space.groups))
    store = RunStore(tmp_path / "run")
    store.append(candidate(ev, policy, ms=1.0, acc=0.5))
    calls.clear()
    timed = Measurement(3.5, 0.01, "steady-device")
    record = fill.fill_budget(store, ev, 4.0, 0.9, lambda p: timed, seed=0)
    assert record is not None and record["filled"] is not None and record["latency_ms"] == 3.5
    (cand,) = [c for c in store.ok() if c.strategy == "fill"]
    assert not calls  # the fill's own timing became the candidate's figure: nothing timed it again
    assert cand.metrics.latency_ms == 3.5 and cand.metrics.latency_kind == "measured"
    assert cand.metrics.latency_model == "steady-device"
