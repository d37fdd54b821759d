"""Issue 17.3: several devices from one search (``device.also``): every candidate carries a latency
on each device, ``prunepilot pareto RUN --device NAME`` gives that device's front, budget and export,
a measured device is measured only for its front points, proposals are projected into each device's
budget in turn (on that device's latency estimate), and runs without ``also`` are unchanged."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from search_helpers import tiny_config
from typer.testing import CliRunner

import prunepilot.search
from prunepilot.cli import app
from prunepilot.errors import ConfigError
from prunepilot.hw_models import registry
from prunepilot.hw_models.base import LatencyModel, LatencyResult
from prunepilot.hw_models.layer_trace import trace_layers
from prunepilot.pruning import PruningPolicy
from prunepilot.search import evaluator as evaluator_module
from prunepilot.search import local_backend
from prunepilot.search.config import validate_config
from prunepilot.search.devices import device_view, on_device
from prunepilot.search.inloop import CHECK_POINTS
from prunepilot.search.pareto import best_within_budget, pareto_front
from prunepilot.search.records import Candidate, DeviceLatency, Measurement, Metrics
from prunepilot.search.store import RunStore
from prunepilot.search.strategies import DriverContext, get_strategy
from prunepilot.search.trainable import SearchSetup, trial_context, trial_evaluator

PHONE = {"name": "phone", "description": "MACs at 3 ms per MMAC", "latency_model": "macs",
         "settings": {"ms_per_unit": 3.0, "offset_ms": 0.1}}  # fmt: skip


class CountingLatency(LatencyModel):
    """A measured device that is exactly affine in MACs, counting its measurements (and which ran in a trial)."""

    requires_model = True
    name = "test-measured"
    calls: ClassVar[list[bool]] = []
    in_trial: ClassVar[bool] = False

    def measure_ms(self, model: Any, input_shape: Sequence[int], batch_size: int = 1) -> LatencyResult:
        CountingLatency.calls.append(CountingLatency.in_trial)
        mmacs = sum(s.macs for s in trace_layers(model, input_shape)) / 1e6
        return LatencyResult(ms=0.3 + 4.0 * mmacs, kind="measured", model_name=self.name, cv=0.01)


@pytest.fixture(scope="module")
def devices_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A device folder with `phone` (macs, other settings) and `box` (measured) on $PRUNEPILOT_DEVICES."""
    folder = tmp_path_factory.mktemp("devices")
    (folder / "phone.yaml").write_text(yaml.safe_dump(PHONE))
    (folder / "box.yaml").write_text(yaml.safe_dump({"name": "box", "latency_model": "test-measured"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNEPILOT_DEVICES", str(folder))
        mp.setitem(registry._REGISTRY, "test-measured", CountingLatency)
        yield folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def config(tmp_path: Path, cache: Path, **changes: Any) -> dict[str, Any]:
    return tiny_config(tmp_path, **{"model.cache_dir": str(cache), "strategy.evaluations": 8, **changes})


@pytest.fixture(scope="module")
def run(devices_dir: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One search with two predicted devices beside the primary (MACs at 1 ms per MMAC)."""
    tmp = tmp_path_factory.mktemp("run")
    cfg = config(tmp, cache, **{"device.also": ["phone", "rpi4"]})
    prunepilot.search.run(cfg, backend="local", run_dir=tmp / "run", progress=False)
    return tmp / "run"


@pytest.fixture(scope="module")
def plain(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same search on its own device only (no ``device.also``)."""
    tmp = tmp_path_factory.mktemp("plain")
    prunepilot.search.run(config(tmp, cache), backend="local", run_dir=tmp / "run", progress=False)
    return tmp / "run"


def test_every_candidate_carries_each_devices_latency(run: Path) -> None:
    store = RunStore(run)
    info = store.read_info()
    for cand in [*store.ok(), *store.baseline()]:
        m = cand.metrics
        assert set(m.devices) == {"phone", "rpi4"} and m.device is None
        assert m.devices["phone"] == DeviceLatency(pytest.approx(0.1 + 3.0 * m.macs / 1e6), "predicted", "macs")
        assert m.devices["rpi4"].latency_kind == "predicted" and m.devices["rpi4"].latency_model == "roofline"
        assert cand.budget_ms == info["budget_ms"]  # judged on the search's own budget
    lines = [json.loads(line) for line in (run / "candidates.jsonl").read_text().splitlines()]
    assert all(set(rec["metrics"]["devices"]) == {"phone", "rpi4"} for rec in lines)
    # run.json: each device's base latency and its budget, the same share of it as the search's
    share = info["budget_ms"] / info["base"]["latency_ms"]
    for name in ("phone", "rpi4"):
        rec = info["devices"][name]
        assert rec["base_latency_ms"] == pytest.approx(info["base"]["devices"][name]["latency_ms"])
        assert rec["budget_ms"] == pytest.approx(share * rec["base_latency_ms"]) and rec["budget_share"] == share
        assert rec["in_loop_latency"] == {"mode": "device-predicts"}
        assert rec["budget_reachable"] == (rec["budget_ms"] >= rec["reachable_min_ms"])
    assert share == pytest.approx(0.6)
    # a tiny model on the rpi4 roofline is all per-layer overhead: 60% of its base is out of reach, and said so
    assert (
        info["devices"]["rpi4"]["budget_reachable"] is False and info["devices"]["rpi4"]["best_within_budget"] is None
    )
    phone = info["devices"]["phone"]["best_within_budget"]
    assert phone is not None and phone["latency_ms"] <= info["devices"]["phone"]["budget_ms"]


def test_pareto_device_exports_a_policy_within_that_devices_budget(run: Path, tmp_path: Path) -> None:
    before = (run / "front.json").read_text()
    export = tmp_path / "p.json"
    out = CliRunner().invoke(app, ["pareto", str(run), "--device", "phone", "--export", str(export)])
    assert out.exit_code == 0, out.output
    assert "Pareto front on phone" in " ".join(out.output.split()) and "exported" in out.output
    budget = RunStore(run).devices()["phone"]["budget_ms"]
    policy = PruningPolicy.load(export)
    meta = policy.metadata
    assert meta["device"] == "phone" and meta["metrics"]["device"] == "phone"
    chosen = next(c for c in RunStore(run).ok() if c.id == meta["candidate"])
    assert meta["metrics"]["latency_ms"] == chosen.metrics.devices["phone"].latency_ms <= budget
    assert meta["metrics"]["latency_model"] == "macs" and meta["metrics"]["within_budget"] is True
    view = device_view(RunStore(run), "phone")
    best = best_within_budget(view.candidates, budget)
    assert best is not None and best.id == chosen.id  # the most accurate within the phone's budget
    # the device's front and pictures; front.json stays the search device's
    front = json.loads((run / "front-phone.json").read_text())
    assert [p["id"] for p in front] == [c.id for c in pareto_front(view.candidates)]
    assert all(p["metrics"]["device"] == "phone" for p in front)
    assert (run / "front.json").read_text() == before and (run / "pareto-phone.png").is_file()
    html = (run / "pareto.html").read_text()
    assert "updatemenus" in html and all(f"on {d}" in html for d in ("phone", "rpi4", "local-cpu"))
    # --budget overrides that device's budget
    tight = min(c.metrics.latency_ms for c in view.candidates)
    args = ["pareto", str(run), "--device", "phone", "--no-plots", "--budget", str(tight), "--export", str(export)]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert PruningPolicy.load(export).metadata["metrics"]["latency_ms"] <= tight


def test_apply_measures_an_exported_policy_on_the_device_it_was_exported_for(run: Path, tmp_path: Path) -> None:
    from prunepilot.apply import search_context

    export = tmp_path / "p.json"
    out = CliRunner().invoke(app, ["pareto", str(run), "--device", "phone", "--no-plots", "--export", str(export)])
    assert out.exit_code == 0, out.output
    context = search_context(PruningPolicy.load(export))
    assert context.device == "phone" and context.latency_model == "macs"
    assert context.base_latency_ms == RunStore(run).devices()["phone"]["base_latency_ms"]
    out = CliRunner().invoke(app, ["pareto", str(run), "--no-plots", "--export", str(export)])
    assert out.exit_code == 0 and search_context(PruningPolicy.load(export)).device == "local-cpu"


def test_an_unknown_device_is_refused_naming_the_runs_devices(run: Path) -> None:
    out = CliRunner().invoke(app, ["pareto", str(run), "--device", "watch", "--no-plots"])
    assert out.exit_code != 0
    assert "no device 'watch'" in out.output
    assert all(name in out.output for name in ("local-cpu", "phone", "rpi4"))


#: What the seeded random search of :func:`config` proposed on one device before device.also aimed
#: proposals anywhere else: widths (features.0, .3, .6, .9) and projection scale of each trial, in order.
SINGLE_DEVICE_PROPOSALS = [
    ([6, 7, 4, 8], 1.0),
    ([6, 14, 10, 24], 0.892902),
    ([5, 15, 13, 8], 0.970352),
    ([7, 4, 13, 12], 1.0),
    ([7, 10, 8, 18], 1.0),
    ([2, 5, 12, 24], 1.0),
    ([6, 8, 16, 31], 0.977383),
    ([6, 12, 12, 17], 1.0),
]


def test_a_single_device_random_search_proposes_what_it_did_before(plain: Path) -> None:
    ok = RunStore(plain).ok()
    got = [([c.policy.channels[k] for k in sorted(c.policy.channels)], c.extra["projection_scale"]) for c in ok]
    assert [w for w, _ in got] == [w for w, _ in SINGLE_DEVICE_PROPOSALS]
    assert [s for _, s in got] == pytest.approx([s for _, s in SINGLE_DEVICE_PROPOSALS], abs=1e-6)
    assert all(set(c.extra) == {"projection_scale"} for c in ok)  # no aimed_at: the records of before


def test_a_search_on_several_devices_aims_at_each_devices_budget_in_turn(run: Path, plain: Path) -> None:
    store = RunStore(run)
    info, ok = store.read_info(), store.ok()
    devices = info["devices"]
    # rpi4's budget is out of reach on this tiny model: no turn is spent on it
    assert not devices["rpi4"]["budget_reachable"]
    assert [c.extra["aimed_at"] for c in ok] == [None, "phone"] * 4
    for rec in devices.values():  # an aim budget on each: predicting devices, auto margin 0
        assert rec["trial_budget_ms"] == pytest.approx(max(rec["budget_ms"], rec["reachable_min_ms"]))
    for c in ok:
        aim = c.extra["aimed_at"]
        ms = c.metrics.latency_ms if aim is None else c.metrics.devices[aim].latency_ms
        budget = info["trial_budget_ms"] if aim is None else devices[aim]["trial_budget_ms"]
        assert ms <= budget * (1 + 1e-9), (c.id, aim)  # within the budget of the device it was projected for
        if c.extra["projection_scale"] < 1.0:  # projected: near that budget, from below
            assert ms >= 0.95 * budget, (c.id, aim)
    phone_budget = devices["phone"]["budget_ms"]
    projected = [c for c in ok if c.extra["aimed_at"] == "phone" and c.extra["projection_scale"] < 1.0]
    assert len(projected) >= 2
    # the search on its own device projects where its own budget maps: over the phone's budget there
    plain_projected = [c for c in RunStore(plain).ok() if c.extra["projection_scale"] < 1.0]
    assert plain_projected and all(c.metrics.latency_ms > 0.9 * info["budget_ms"] for c in plain_projected)
    plain_on_phone = 0.1 + 3.0 * min(c.metrics.macs for c in plain_projected) / 1e6  # phone's latency model
    assert plain_on_phone > phone_budget
    assert devices["rpi4"]["trial_budget_ms"] == pytest.approx(devices["rpi4"]["reachable_min_ms"])
    # the search's own trials draw and project what the search on it alone does, trial for trial
    by_id = {c.id: c for c in RunStore(plain).ok()}
    mine = [c for c in ok if c.extra["aimed_at"] is None]
    assert len(mine) == 4 and all(c.policy.key() == by_id[c.id].policy.key() for c in mine)
    assert all(c.metrics.accuracy == by_id[c.id].metrics.accuracy for c in mine)


def test_random_numbers_its_trials_only_on_several_devices(run: Path, cache: Path, tmp_path: Path) -> None:
    store = RunStore(run)
    ev = evaluator_module.get_evaluator(validate_config(store.read_config()))
    ctx = DriverContext(ev.space, 1.0, 0.25, 5, 1, 0, 2.0)
    setups = {
        (also, project): get_strategy("random", {"project": project}).tune_setup(
            DriverContext(**{**ctx.__dict__, "also": also})
        )
        for also in ((), ("phone",))
        for project in (True, False)
    }
    turn = setups[("phone",), True].param_space["turn"]
    assert list(turn.values) == [0, 1, 2, 3, 4] and setups[("phone",), True].num_samples == 1
    for key in (((), True), ((), False), (("phone",), False)):
        assert "turn" not in setups[key].param_space and setups[key].num_samples == 5
    # a trial's context: the search's own budget first, then each device's, in turn; none without also
    ev.devices.restore_from_run(store.devices())
    tctx = trial_context(ev, budget_ms=1.0, seed=0, trial_id="t", report=lambda *a: None, base_latency_ms=2.0)
    assert [tctx.aim(i).device for i in range(5)] == [None, "phone", None, "phone", None]  # rpi4: out of reach
    phone = tctx.aim(1)
    widths = ev.space.full_widths()
    assert phone.budget_ms == store.devices()["phone"]["trial_budget_ms"]
    assert phone.predict_latency_ms(widths, ()) == pytest.approx(store.devices()["phone"]["base_latency_ms"])
    alone = evaluator_module.get_evaluator(validate_config(config(tmp_path, cache)))
    actx = trial_context(alone, budget_ms=1.0, seed=0, trial_id="t", report=lambda *a: None, base_latency_ms=2.0)
    assert actx.targets == () and {actx.aim(i).device for i in range(3)} == {None}
    assert actx.aim(2).budget_ms == 1.0
    evaluator_module._EVALUATORS.clear()


def test_optuna_tpe_aims_each_proposal_at_a_device_drawn_from_it(
    devices_dir: Path, cache: Path, tmp_path: Path
) -> None:
    cfg = config(tmp_path, cache, **{"device.also": ["phone"], "strategy.name": "optuna-tpe"})
    prunepilot.search.run(cfg, backend="local", run_dir=tmp_path / "run", progress=False)
    store = RunStore(tmp_path / "run")
    info, ok = store.read_info(), store.ok()
    phone = info["devices"]["phone"]["trial_budget_ms"]
    aims = [c.extra["aimed_at"] for c in ok]
    assert set(aims) == {None, "phone"}  # both budgets aimed at (seeded: the same on every run)
    for c in ok:
        ms, budget = (
            (c.metrics.latency_ms, info["trial_budget_ms"])
            if c.extra["aimed_at"] is None
            else (c.metrics.devices["phone"].latency_ms, phone)
        )
        assert ms <= budget * (1 + 1e-9)
        if c.extra["projection_scale"] < 1.0:
            assert ms >= 0.95 * budget
    assert any(c.extra["projection_scale"] < 1.0 for c in ok if c.extra["aimed_at"] == "phone")
    again = tmp_path / "again"
    prunepilot.search.run(cfg, backend="local", run_dir=again, progress=False)
    assert [c.extra["aimed_at"] for c in RunStore(again).ok()] == aims


def test_runs_without_also_are_unchanged(plain: Path) -> None:
    assert "devices" not in RunStore(plain).read_info()
    lines = (plain / "candidates.jsonl").read_text().splitlines()
    assert not any("devices" in json.loads(line)["metrics"] for line in lines)  # the wire format of old runs
    front = (plain / "front.json").read_text()
    out = CliRunner().invoke(app, ["pareto", str(plain), "--no-plots"])
    assert out.exit_code == 0, out.output
    assert (plain / "front.json").read_text() == front and "Pareto front:" in out.output
    out = CliRunner().invoke(app, ["pareto", str(plain), "--device", "local-cpu", "--no-plots"])
    assert out.exit_code == 0 and (plain / "front.json").read_text() == front
    out = CliRunner().invoke(app, ["pareto", str(plain), "--device", "phone", "--no-plots"])
    assert out.exit_code != 0 and "its devices are 'local-cpu'" in out.output


def test_a_measured_device_is_measured_only_for_its_front_points(
    devices_dir: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    CountingLatency.calls.clear()
    trial = local_backend.run_trial

    def in_trial(*args: Any, **kwargs: Any) -> None:
        CountingLatency.in_trial = True
        try:
            trial(*args, **kwargs)
        finally:
            CountingLatency.in_trial = False

    monkeypatch.setattr(local_backend, "run_trial", in_trial)
    run = tmp_path / "run"
    cfg = config(tmp_path, cache, **{"device.also": ["box"]})
    prunepilot.search.run(cfg, backend="local", run_dir=run, progress=False)
    store = RunStore(run)
    rec = store.devices()["box"]
    assert rec["in_loop_latency"]["mode"] == "predicted" and rec["base_latency_kind"] == "measured"
    assert all(
        (c.metrics.devices["box"].latency_kind, c.metrics.devices["box"].latency_model)
        == ("predicted", "test-measured~fit")
        for c in store.ok()
    )
    assert not any(CountingLatency.calls)  # nothing was measured in a trial
    view = device_view(store, "box")
    policies = {c.policy.key() for c in pareto_front(view.candidates)}
    measured = json.loads((run / "remeasured-devices.json").read_text())["box"]
    assert set(measured) == {c.id for c in view.candidates if c.policy.key() in policies}
    # the fit points (the base among them) and the check points at the start, the front's policies at
    # the end, each timed beside the box's base in anchor_rounds rounds (paired)
    paired = 2 * validate_config(cfg).evaluation.anchor_rounds
    assert len(CountingLatency.calls) == 5 + CHECK_POINTS + paired * len(policies)
    assert {m["measured_with"] for m in measured.values()} == {"test-measured~anchored"}
    assert all(c.measured is not None for c in pareto_front(view.candidates))
    assert not (run / "remeasured.json").exists()  # the search's own device predicts: nothing re-measured there
    export = tmp_path / "p.json"
    out = CliRunner().invoke(app, ["pareto", str(run), "--device", "box", "--no-plots", "--export", str(export)])
    assert out.exit_code == 0, out.output
    metrics = PruningPolicy.load(export).metadata["metrics"]
    assert metrics["measured_with"] == "test-measured~anchored" and metrics["measured_latency_ms"] <= rec["budget_ms"]
    # resumed in a new process: the predictor comes from run.json (no calibration), the front is measured again
    calls = len(CountingLatency.calls)
    evaluator_module._EVALUATORS.clear()
    prunepilot.search.run(cfg, backend="local", run_dir=run, resume=True, progress=False)
    assert len(CountingLatency.calls) == calls + paired * len(policies) and not any(CountingLatency.calls)
    assert [c.metrics for c in RunStore(run).ok()] == [c.metrics for c in store.ok()]
    # a trial in another process gets the device's in-loop predictor from the setup, measures nothing
    calls = len(CountingLatency.calls)
    evaluator_module._EVALUATORS.clear()
    info = store.read_info()
    shipped = {"predictors": {"box": rec["in_loop_latency"]["predictor"]}, "budgets": {"box": rec["trial_budget_ms"]}}
    setup = SearchSetup(config=store.read_config(), budget_ms=info["budget_ms"], fit=info["fit"], run_id="x",
                        base_latency_ms=1.0, devices=shipped)  # fmt: skip
    ev = trial_evaluator(setup)
    metrics_there = ev.evaluate(PruningPolicy.uniform(ev.space, 0.5))
    assert metrics_there.devices["box"].latency_model == "test-measured~fit" and len(CountingLatency.calls) == calls
    # its aim budget too: the budget less the margin its predictor needs, never below the fastest on its estimate
    (box,) = trial_context(ev, budget_ms=1.0, seed=0, trial_id="t", report=lambda *a: None, base_latency_ms=1.0).targets
    half, lowest = (PruningPolicy.uniform(ev.space, r).channels for r in (0.5, 0.25))
    assert box.predict_latency_ms(half, ()) == metrics_there.devices["box"].latency_ms
    margin = rec["in_loop_latency"]["calibration"]["margin_auto"]
    aim = max(rec["budget_ms"] / (1 + margin), box.predict_latency_ms(lowest, ()))
    assert box.budget_ms == rec["trial_budget_ms"] == pytest.approx(aim)
    assert len(CountingLatency.calls) == calls
    evaluator_module._EVALUATORS.clear()
    with pytest.raises(RuntimeError, match="no in-loop predictor"):
        trial_evaluator(SearchSetup(**{**setup.__dict__, "devices": None})).base_metrics()
    evaluator_module._EVALUATORS.clear()


@pytest.mark.parametrize(
    "also,message",
    [
        (["watch"], "field 'device.also': unknown device 'watch'; known devices are"),
        (["local-cpu"], "the search's own device 'local-cpu'"),
        (["rpi4", "rpi4"], "names ['rpi4'] more than once"),
    ],
)
def test_device_also_is_checked_before_anything_runs(tmp_path: Path, also: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(tiny_config(tmp_path, **{"device.also": also}))
    assert message in str(err.value)


def test_records_carry_devices_and_old_records_round_trip() -> None:
    old = {"accuracy": 0.9, "latency_ms": 2.0, "latency_kind": "predicted", "latency_model": "macs",
           "macs": 1000, "params": 10, "eval_seconds": 0.1, "latency_cv": None, "protocol": "bn-recal"}  # fmt: skip
    assert Metrics.from_json(old).to_dict() == old  # no `devices`, no `device`
    m = Metrics.from_json({**old, "devices": {"phone": {"latency_ms": 5.0, "latency_kind": "predicted",
                                                        "latency_model": "macs"}}})  # fmt: skip
    policy = {"channels": {}, "group_channels": {}, "keep_ratios": {}, "signature": "s", "round_to": 1}
    cand = Candidate.from_json({"id": "t-0000", "policy": policy, "metrics": m.to_dict(), "budget_ms": 3.0})
    measured = cand.with_measured_on({"phone": Measurement(6.0, 0.02, "torch-cpu")})
    again = Candidate.from_json(measured.to_json())
    assert again.metrics == m and again.measured_on == {"phone": Measurement(6.0, 0.02, "torch-cpu")}
    seen = on_device(again, "phone", 5.5)
    assert seen is not None and seen.metrics.latency_ms == 5.0 and seen.metrics.device == "phone"
    assert seen.budget_latency_ms == 6.0 and seen.within_budget is False  # judged on the measured figure
    assert on_device(again, "watch", 1.0) is None
