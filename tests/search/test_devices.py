"""Issue 17.3: several devices from one search (``device.also``): every candidate carries a latency
on each device, ``prunepilot pareto RUN --device NAME`` gives that device's front, budget and export,
a measured device is measured only for its front points, and runs without ``also`` are unchanged."""

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
from prunepilot.search.trainable import SearchSetup, trial_evaluator

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


def test_the_search_aims_at_its_own_device_and_runs_without_also_are_unchanged(
    run: Path, cache: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    prunepilot.search.run(config(tmp_path, cache), backend="local", run_dir=plain, progress=False)

    def figures(c: Candidate) -> tuple[Any, ...]:
        return c.id, c.policy.key(), c.metrics.accuracy, c.metrics.latency_ms, c.within_budget

    assert [figures(c) for c in RunStore(plain).ok()] == [figures(c) for c in RunStore(run).ok()]
    assert [figures(c) for c in RunStore(plain).read_front()] == [figures(c) for c in RunStore(run).read_front()]
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
    # the fit points (the base among them) and the check points at the start, the front's policies at the end
    assert len(CountingLatency.calls) == 5 + CHECK_POINTS + len(policies)
    assert all(c.measured is not None for c in pareto_front(view.candidates))
    assert not (run / "remeasured.json").exists()  # the search's own device predicts: nothing re-measured there
    export = tmp_path / "p.json"
    out = CliRunner().invoke(app, ["pareto", str(run), "--device", "box", "--no-plots", "--export", str(export)])
    assert out.exit_code == 0, out.output
    metrics = PruningPolicy.load(export).metadata["metrics"]
    assert metrics["measured_with"] == "test-measured" and metrics["measured_latency_ms"] <= rec["budget_ms"]
    # resumed in a new process: the predictor comes from run.json (no calibration), the front is measured again
    calls = len(CountingLatency.calls)
    evaluator_module._EVALUATORS.clear()
    prunepilot.search.run(cfg, backend="local", run_dir=run, resume=True, progress=False)
    assert len(CountingLatency.calls) == calls + len(policies) and not any(CountingLatency.calls)
    assert [c.metrics for c in RunStore(run).ok()] == [c.metrics for c in store.ok()]
    # a trial in another process gets the device's in-loop predictor from the setup, measures nothing
    calls = len(CountingLatency.calls)
    evaluator_module._EVALUATORS.clear()
    info = store.read_info()
    setup = SearchSetup(config=store.read_config(), budget_ms=info["budget_ms"], fit=info["fit"], run_id="x",
                        base_latency_ms=1.0, devices={"box": rec["in_loop_latency"]["predictor"]})  # fmt: skip
    ev = trial_evaluator(setup)
    metrics_there = ev.evaluate(PruningPolicy.uniform(ev.space, 0.5))
    assert metrics_there.devices["box"].latency_model == "test-measured~fit" and len(CountingLatency.calls) == calls
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
