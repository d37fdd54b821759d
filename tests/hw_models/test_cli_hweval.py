"""The hardware CLI commands and the hw-eval runner, on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from prunepilot.cli.hw import register
from prunepilot.hw_models.hweval import HwEvalSettings, run_hw_eval
from prunepilot.hw_models.layer_trace import trace_layers
from prunepilot.hw_models.learned import LearnedLatency
from prunepilot.hw_models.lut_profile import profile_model
from prunepilot.hw_models.measure import TorchCPULatency
from prunepilot.hw_models.roofline import load_profile
from prunepilot.hw_models.testing import FAST
from prunepilot.models import build_model

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    a.command("noop")(lambda: None)  # typer runs a single command without its name otherwise
    return a


@pytest.fixture
def fast_device(tmp_path: Path) -> Path:
    p = tmp_path / "fast-cpu.yaml"
    settings = {**FAST.record(), "threads": 1, "clock": "thread"}
    p.write_text(yaml.safe_dump({"name": "fast-cpu", "latency_model": "torch-cpu", "settings": settings}))
    return p


def test_devices_lists_profiles_and_local_hardware(app: typer.Typer) -> None:
    res = runner.invoke(app, ["devices"])
    assert res.exit_code == 0, res.output
    for word in ("jetson-orin-nano", "local-cpu", "CPU", "torch threads", "CUDA"):
        assert word in res.output


def test_errors_are_one_line_and_exit_2(app: typer.Typer, tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["profile", "--device", "no-such", "--model", "testing:tiny-convnet", "--out", str(tmp_path / "x")]
    )
    assert res.exit_code == 2 and "unknown device 'no-such'" in res.output and "Traceback" not in res.output
    res = runner.invoke(
        app, ["profile", "--device", "rpi4", "--model", "testing:tiny-convnet", "--out", str(tmp_path / "x")]
    )
    assert res.exit_code == 2 and "torch-cpu" in res.output


def test_profile_command_writes_a_table(app: typer.Typer, fast_device: Path, tmp_path: Path) -> None:
    out = tmp_path / "lut.json"
    args = ["profile", "--device", str(fast_device), "--model", "testing:tiny-convnet", "--out", str(out)]
    res = runner.invoke(app, [*args, "--input-shape", "1,3,16,16", "--grid", "0.5,1", "--extra-samples", "1"])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert (
        data["format"] == "prunepilot.lut/v1"
        and data["device"] == "fast-cpu"
        and data["model"] == "testing:tiny-convnet"
    )
    assert data["threads"] == 1 and data["clock"] == "thread" and data["entries"]


def test_calibrate_command_writes_a_profile(app: typer.Typer, fast_device: Path, tmp_path: Path) -> None:
    out, lut_path, learned_path = tmp_path / "cal.yaml", tmp_path / "lut.json", tmp_path / "learned.json"
    net, shape = build_model("testing:tiny-convnet"), (1, 3, 16, 16)
    profile_model(net, shape, fractions=(0.5, 1.0), extra_samples=2, progress=False).save(lut_path)
    args = ["calibrate", "--device", str(fast_device), "--model", "testing:tiny-convnet", "--input-shape", "1,3,16,16"]
    more = ["--lut", str(lut_path), "--learned-out", str(learned_path)]
    res = runner.invoke(app, [*args, "--samples", "3", "--out", str(out), *more])
    assert res.exit_code == 0, res.output
    prof = load_profile(out)
    assert prof.calibration is not None and prof.calibration.samples == 3 and prof.scale > 0
    learned = LearnedLatency(path=learned_path)
    assert learned.predict_layers(trace_layers(net, shape)).ms > 0


def test_hw_eval_runner_reports_every_model() -> None:
    net, shape = build_model("testing:tiny-convnet"), (1, 3, 16, 16)
    measurer = TorchCPULatency(**{**FAST.record(), "threads": 1, "clock": "thread"})
    lut = profile_model(net, shape, fractions=(0.5, 1.0), extra_samples=2, progress=False, clock="thread")
    settings = HwEvalSettings(samples=6, calib=4, rounds=1, repeat=2)
    rep = run_hw_eval(net, shape, measurer, settings, model_name="testing:tiny-convnet", lut=lut)
    expected = {"roofline (raw)", "roofline (calibrated)", "macs (calibrated)", "lut", "lut (calibrated)", "learned"}
    assert set(rep.metrics) == expected and len(rep.measured_ms) == 6
    for name, m in rep.metrics.items():
        assert m.n == 6 and 0 <= m.within_10 <= 1 and rep.predictions_per_s[name] > 0
    assert len(rep.repeatability["medians_ms"]) == 2 and rep.measurements_per_s > 0
    json.dumps(rep.to_dict())  # JSON-ready
