"""`prunepilot apply` end to end on digits, resuming, and every bad input -> one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from apply_helpers import random_policy
from typer.testing import CliRunner

import prunepilot
from prunepilot.apply import ApplyConfig, apply_to_model
from prunepilot.cli.apply import register
from prunepilot.data import DataConfig, build_data
from prunepilot.errors import ConfigError
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace
from prunepilot.training import TrainConfig, evaluate_accuracy, train_base_model

runner = CliRunner()
SPEC = "simplecnn?width_mult=0.5"
DIGITS = DataConfig(name="digits", batch_size=64)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    return app


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A simplecnn trained on digits for a few epochs, and a random policy for it."""
    folder = tmp_path_factory.mktemp("base")
    torch.set_num_threads(1)
    model, info = train_base_model(SPEC, DIGITS, TrainConfig(epochs=3, optimizer="adam", lr=1e-2), folder)
    space = PruningSpace.build(model, torch.zeros(1, 1, 8, 8))
    policy = random_policy(space, seed=7, low=0.4)
    meta = {"metrics": {"latency_ms": 0.5, "latency_kind": "measured", "latency_model": "torch-cpu", "accuracy": 0.9}}
    policy = policy.model_copy(update={"metadata": meta})
    return Path(info["checkpoint"]), policy.save(folder / "policy.json")


def _invoke(*args: str) -> object:
    return runner.invoke(_app(), ["apply", *args], env={"COLUMNS": "200"})


def test_cli_prunes_distils_exports_and_reports(base: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, policy = base
    out = tmp_path / "out"
    res = _invoke(
        "--policy", str(policy), "--model", SPEC, "--checkpoint", str(ckpt), "--out", str(out),
        "--data", "digits", "--epochs", "2", "--distill", "--temperature", "3", "--alpha", "0.8",
        "--export", "onnx,torchscript", "--onnx-exporter", "legacy", "--device", "macs", "--quiet",
    )  # fmt: skip
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    for text in ("accuracy after fine-tuning (test)", "export onnx", "export torchscript", "MACs"):
        assert text in res.output  # type: ignore[attr-defined]
    report = json.loads((out / "report.json").read_text())
    acc = report["accuracy"]
    assert acc["split"] == "test" and "final report" in acc["note"]
    assert all(0.0 <= acc[k] <= 1.0 for k in ("before_pruning", "after_pruning", "after_finetuning"))
    assert acc["after_finetuning"] > 0.5
    ft = report["finetune"]
    assert ft["distill"] == {"temperature": 3.0, "alpha": 0.8, "label_smoothing": 0.0}
    assert ft["train_device"] == "cpu" and ft["mixed_precision"] is False and ft["channels_last"] is False
    assert len(report["steps"][0]["history"]) == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-001.pt", "epoch-002.pt"]
    lat = report["latency"]
    assert lat["kind"] == "predicted" and lat["unit"] == "MMACs" and lat["within_10pct"] is None
    assert lat["pruned_ms"] < lat["base_ms"] and "not judged" in lat["note"]
    assert [c["format"] for c in report["exports"]] == ["onnx", "torchscript"]
    assert all(c["ok"] and c["max_abs_diff"] <= 1e-4 for c in report["exports"])
    assert report["macs"]["after"] < report["macs"]["before"] and report["params"]["ratio"] < 1
    # the saved model is the fine-tuned one: same test accuracy after a reload without pickle
    reloaded = prunepilot.load_pruned(out)
    assert evaluate_accuracy(reloaded, build_data(DIGITS).test) == acc["after_finetuning"]


def test_interrupted_apply_resumes_to_the_same_model(base: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, policy = base
    cfg = ApplyConfig(
        policy=policy, model=SPEC, checkpoint=ckpt, out=tmp_path / "out", data=DIGITS,
        train=TrainConfig(epochs=2, lr=0.02, seed=1), iterative=2, measure_latency=False,
    )  # fmt: skip
    first = apply_to_model(cfg)
    assert len(first.report["steps"]) == 2 and first.policy.channels == json.loads(policy.read_text())["channels"]
    done = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    # a crash after step 2's first epoch: its last state and all outputs are gone
    (tmp_path / "out" / "checkpoints" / "step-2" / "epoch-002.pt").unlink()
    for name in ("model.pt", "report.json", "pruned.json"):
        (tmp_path / "out" / name).unlink()
    with pytest.raises(ConfigError, match="already exists"):
        apply_to_model(cfg)
    resumed = apply_to_model(cfg.model_copy(update={"resume": True}))
    again = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert all(torch.equal(done[k], again[k]) for k in done)
    assert resumed.report["accuracy"]["after_finetuning"] == first.report["accuracy"]["after_finetuning"]
    # resuming under another config is refused, naming the field
    with pytest.raises(ConfigError, match="iterative"):
        apply_to_model(cfg.model_copy(update={"resume": True, "iterative": 3}))


# --- bad input ----------------------------------------------------------------------------------
def test_checkpoint_that_needs_pickle_is_refused(base: tuple[Path, Path], tmp_path: Path) -> None:
    _ckpt, policy = base
    bad = tmp_path / "whole-model.pt"
    torch.save(build_model(SPEC, in_channels=1), bad)  # pickles the nn.Module, not just tensors
    out = tmp_path / "out"
    res = _invoke("--policy", str(policy), "--model", SPEC, "--checkpoint", str(bad), "--out", str(out),
                  "--data", "digits", "--no-latency")  # fmt: skip
    assert res.exit_code == 2  # type: ignore[attr-defined]
    assert "weights_only=True" in res.output and "state_dict" in res.output  # type: ignore[attr-defined]
    assert not out.exists()


def test_unsupported_export_format_lists_the_supported_ones(base: tuple[Path, Path], tmp_path: Path) -> None:
    _ckpt, policy = base
    res = _invoke("--policy", str(policy), "--model", SPEC, "--out", str(tmp_path / "o"), "--data", "digits",
                  "--export", "onnx,tflite")  # fmt: skip
    assert res.exit_code == 2  # type: ignore[attr-defined]
    assert "'tflite' is not supported" in res.output  # type: ignore[attr-defined]
    assert "'onnx', 'torchscript' or 'exported-program'" in res.output  # type: ignore[attr-defined]


def test_unwritable_out_is_a_clear_error(base: tuple[Path, Path], tmp_path: Path) -> None:
    _ckpt, policy = base
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    res = _invoke("--policy", str(policy), "--model", SPEC, "--out", str(blocker / "out"), "--data", "digits",
                  "--no-latency")  # fmt: skip
    assert res.exit_code == 2 and "not writable" in res.output  # type: ignore[attr-defined]


def test_existing_out_is_never_clobbered(base: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, policy = base
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    args = ["--policy", str(policy), "--model", SPEC, "--checkpoint", str(ckpt), "--out", str(out),
            "--data", "digits", "--no-latency", "--quiet"]  # fmt: skip
    res = _invoke(*args)
    assert res.exit_code == 2 and "--overwrite" in res.output  # type: ignore[attr-defined]
    res = _invoke(*args, "--overwrite")  # not an apply folder: refused even with --overwrite
    assert res.exit_code == 2 and "refuses to delete" in res.output  # type: ignore[attr-defined]
    assert (out / "thesis.tex").read_text() == "precious"
    res = _invoke(*args, "--resume")
    assert res.exit_code == 2 and "nothing to resume" not in res.output  # type: ignore[attr-defined]
    assert "no interrupted apply" in res.output  # type: ignore[attr-defined]
    # an earlier apply's folder may be replaced
    other = tmp_path / "prev"
    assert _invoke(*args[:7], str(other), *args[8:]).exit_code == 0  # type: ignore[attr-defined]
    assert _invoke(*args[:7], str(other), *args[8:]).exit_code == 2  # type: ignore[attr-defined]
    assert _invoke(*args[:7], str(other), *args[8:], "--overwrite").exit_code == 0  # type: ignore[attr-defined]


def test_flag_combinations_are_checked_before_any_work(base: tuple[Path, Path], tmp_path: Path) -> None:
    _ckpt, policy = base
    common = ["--policy", str(policy), "--model", SPEC, "--out", str(tmp_path / "o")]
    res = _invoke(*common, "--data", "digits", "--distill")
    assert res.exit_code == 2 and "--distill needs fine-tuning" in res.output  # type: ignore[attr-defined]
    res = _invoke(*common, "--epochs", "1", "--input-shape", "1,1,8,8")
    assert res.exit_code == 2 and "needs data" in res.output  # type: ignore[attr-defined]
    res = _invoke(*common, "--data", "digits", "--device", "no-such-device")
    assert res.exit_code == 2 and "unknown device" in res.output  # type: ignore[attr-defined]
    bad_yaml = tmp_path / "ft.yaml"
    bad_yaml.write_text("epochs: 2\noptimiser: sgd\n")
    res = _invoke(*common, "--data", "digits", "--finetune", str(bad_yaml))
    assert res.exit_code == 2 and "'optimiser'" in res.output  # type: ignore[attr-defined]
    res = _invoke(*common, "--data", "digits", "--iterative", "0")
    assert res.exit_code == 2 and "--iterative 0" in res.output  # type: ignore[attr-defined]
    res = _invoke("--policy", str(tmp_path / "missing.json"), "--model", SPEC, "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "does not exist" in res.output  # type: ignore[attr-defined]
    assert not (tmp_path / "o").exists()


def test_mismatched_policy_lists_groups_and_by_ratio_applies_it(base: tuple[Path, Path], tmp_path: Path) -> None:
    _ckpt, policy = base  # found on simplecnn?width_mult=0.5
    args = ["--policy", str(policy), "--model", "simplecnn", "--out", str(tmp_path / "o"), "--data", "digits",
            "--no-latency", "--quiet"]  # fmt: skip
    res = _invoke(*args)
    assert res.exit_code == 2  # type: ignore[attr-defined]
    assert "does not match" in res.output and "features.0: policy 32 ch, model 64 ch" in res.output  # type: ignore[attr-defined]
    assert "--by-ratio" in res.output and not (tmp_path / "o").exists()  # type: ignore[attr-defined]
    res = _invoke(*args, "--by-ratio")
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["policy_match"] == "by-ratio: names"
    assert prunepilot.load_pruned(tmp_path / "o")(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_bad_policy_files_are_one_clear_error_before_out(tmp_path: Path) -> None:
    space = PruningSpace.build(build_model("testing:tiny-convnet").eval(), torch.zeros(1, 3, 16, 16))
    raw = json.loads(PruningPolicy.uniform(space, 0.5).to_json())
    group = space.names[0]
    bad = {
        "unknown-importance": ({**raw, "importance": "magic"}, "'magic'"),
        "taylor-no-data": ({**raw, "importance": "taylor"}, "give --data NAME"),
        "missing-group": ({**raw, "channels": {k: v for k, v in raw["channels"].items() if k != group}}, group),
        "disagreeing": ({**raw, "keep_ratios": {**raw["keep_ratios"], group: 1.0}}, "disagree"),
    }
    for name, (policy, needle) in bad.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(policy))
        out = tmp_path / f"out-{name}"
        res = _invoke("--policy", str(path), "--model", "testing:tiny-convnet", "--input-shape", "1,3,16,16",
                      "--out", str(out), "--no-latency", "--quiet")  # fmt: skip
        assert res.exit_code == 2, (name, res.output)  # type: ignore[attr-defined]
        assert needle in res.output, (name, res.output)  # type: ignore[attr-defined]
        assert not out.exists(), name
