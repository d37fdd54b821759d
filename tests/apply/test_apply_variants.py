"""`apply --importance`, `--reconstruct` (calibration images only) and `--at-init` on digits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from apply_helpers import random_policy
from pydantic import ValidationError
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from prunepilot.apply import ApplyConfig, apply_to_model
from prunepilot.apply import pipeline as pipeline_module
from prunepilot.cli.apply import register
from prunepilot.data import DataConfig, build_data
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace
from prunepilot.pruning import reconstruct as reconstruct_module
from prunepilot.training import TrainConfig, train_base_model

runner = CliRunner()
SPEC = "testing:tiny-convnet"
DIGITS = DataConfig(name="digits", batch_size=64, calib_size=128)


def _invoke(*args: str) -> Any:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    return runner.invoke(app, ["apply", *args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny-convnet trained on digits, and a policy keeping 40-70% of each group."""
    folder = tmp_path_factory.mktemp("base")
    torch.set_num_threads(1)
    model, info = train_base_model(SPEC, DIGITS, TrainConfig(epochs=4, optimizer="adam", lr=1e-2), folder)
    space = PruningSpace.build(model, torch.zeros(1, 1, 8, 8))
    return Path(info["checkpoint"]), random_policy(space, seed=3, low=0.4).save(folder / "policy.json")


def test_reconstruct_refits_on_calibration_images_only_before_fine_tuning(
    base: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt, policy = base
    calib = torch.cat([x for x, _ in build_data(DataConfig(name="digits")).calib])  # what `--data digits` builds
    events: list[str] = []
    real_reconstruct, real_fit, real_iter = reconstruct_module.reconstruct, pipeline_module.fit, DataLoader.__iter__
    refit_model: list[torch.nn.Module] = []

    def spy_reconstruct(pruned: torch.nn.Module, model: torch.nn.Module, batches: Any, kept: Any) -> Any:
        assert torch.equal(torch.cat([x for x, _ in batches]), calib)  # exactly the calibration images

        def no_loader(loader: DataLoader) -> Any:  # type: ignore[type-arg]
            raise AssertionError("reconstruction iterated a data loader (val or test)")

        monkeypatch.setattr(DataLoader, "__iter__", no_loader)
        try:
            record = real_reconstruct(pruned, model, batches, kept)
        finally:
            monkeypatch.setattr(DataLoader, "__iter__", real_iter)
        events.append("reconstruct")
        refit_model.append(pruned)
        return record

    def spy_fit(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        events.append("fit")
        assert refit_model and model is refit_model[0]  # fine-tuning starts from the reconstructed model
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "reconstruct", spy_reconstruct)
    monkeypatch.setattr(pipeline_module, "fit", spy_fit)
    out = tmp_path / "out"
    res = _invoke(
        "--policy", str(policy), "--model", SPEC, "--checkpoint", str(ckpt), "--out", str(out),
        "--data", "digits", "--epochs", "1", "--reconstruct", "--no-latency", "--quiet",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert events == ["reconstruct", "fit"]
    assert "accuracy after reconstruction (test)" in res.output
    report = json.loads((out / "report.json").read_text())
    layers = report["reconstruction"]["layers"]
    assert [f["module"] for f in layers] == ["features.3", "features.6", "features.9", "classifier"]
    assert all(f["error_after"] <= f["error_before"] for f in layers) and any(f["refit"] for f in layers)
    acc = report["accuracy"]
    assert acc["after_reconstruction"] > acc["after_pruning"] + 0.05  # better than BN recalibration alone
    assert report["at_init"] is None and "reconstruct" in report["seconds"]


def test_importance_flag_replaces_the_policys_criterion(base: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, policy = base
    cfg = ApplyConfig(
        policy=policy, model=SPEC, checkpoint=ckpt, out=tmp_path / "out", data=DIGITS, importance="ThiNet",
        measure_latency=False,
    )  # fmt: skip
    result = apply_to_model(cfg)
    assert result.policy.importance == "thinet" and result.report["importance"] == "thinet"
    assert PruningPolicy.load(tmp_path / "out" / "policy.json").importance == "thinet"
    assert result.report["reconstruction"] is None


@pytest.mark.parametrize("criterion", ["snip", "synflow", "random"])
def test_at_init_prunes_a_fresh_seeded_model_and_trains_it(
    base: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, criterion: str
) -> None:
    _ckpt, policy = base
    torch.manual_seed(5)
    fresh = build_model(SPEC, num_classes=10, in_channels=1)
    scored: list[torch.nn.Module] = []
    real_prune = pipeline_module.prune_and_recalibrate

    def spy_prune(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        scored.append(model)
        return real_prune(model, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "prune_and_recalibrate", spy_prune)
    out = tmp_path / "out"
    res = _invoke(
        "--policy", str(policy), "--model", SPEC, "--out", str(out), "--data", "digits", "--epochs", "3",
        "--at-init", "--importance", criterion, "--no-latency", "--quiet",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"pruned at initialisation by {criterion}" in res.output
    report = json.loads((out / "report.json").read_text())
    assert report["at_init"] == {"criterion": criterion, "seed": 0} and report["importance"] == criterion
    assert report["checkpoint"] is None
    # scored and pruned: a fresh model of the architecture, seeded by the training seed (0 here, not 5)
    torch.manual_seed(0)
    expected = build_model(SPEC, num_classes=10, in_channels=1)
    assert torch.equal(scored[0].features[0].weight, expected.features[0].weight)
    assert not torch.equal(scored[0].features[0].weight, fresh.features[0].weight)
    acc = report["accuracy"]
    assert acc["before_pruning"] < 0.3 < acc["after_finetuning"]  # untrained, then trained from scratch
    assert json.loads((out / "policy.json").read_text())["importance"] == criterion


def test_variant_flag_combinations_are_refused_naming_the_flags(base: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, policy = base
    common = ["--policy", str(policy), "--model", SPEC, "--out", str(tmp_path / "o")]
    res = _invoke(*common, "--data", "digits", "--epochs", "1", "--at-init", "--importance", "l1")
    assert res.exit_code == 2 and "at_init needs importance 'snip', 'grasp', 'synflow' or 'random'" in res.output
    assert "got 'l1'" in res.output
    res = _invoke(
        *common, "--data", "digits", "--epochs", "1", "--at-init", "--importance", "snip", "--checkpoint", str(ckpt)
    )
    assert res.exit_code == 2 and "drop the checkpoint" in res.output
    res = _invoke(*common, "--data", "digits", "--at-init", "--importance", "snip")
    assert res.exit_code == 2 and "--epochs N" in res.output
    res = _invoke(*common, "--input-shape", "1,1,8,8", "--reconstruct")
    assert res.exit_code == 2 and "reconstruct refits layers on calibration images: give data" in res.output
    res = _invoke(*common, "--data", "digits", "--reconstruct", "--iterative", "2")
    assert res.exit_code == 2 and "iterative must be 1, got 2" in res.output
    res = _invoke(*common, "--data", "digits", "--importance", "magic")
    assert res.exit_code == 2 and "unknown importance criterion 'magic'" in res.output and "'synflow'" in res.output
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValidationError, match="at_init"):
        ApplyConfig(policy=policy, model=SPEC, out=tmp_path / "o", data=DIGITS, at_init=True, importance="snip")


def test_a_one_step_fine_tune_is_evaluated_on_the_test_split_once(
    base: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt, policy = base
    seen: list[float] = []
    real = pipeline_module.evaluate_accuracy

    def counted(model: torch.nn.Module, batches: Any) -> float:
        seen.append(real(model, batches))
        return seen[-1]

    monkeypatch.setattr(pipeline_module, "evaluate_accuracy", counted)
    cfg = ApplyConfig(
        model=SPEC, checkpoint=ckpt, policy=policy, out=tmp_path / "out", data=DIGITS,
        train=TrainConfig(epochs=1, max_batches_per_epoch=2), measure_latency=False,
    )  # fmt: skip
    report = apply_to_model(cfg).report
    acc = report["accuracy"]
    # before pruning, after pruning without and with BN recalibration, after the fine-tune: once each
    assert len(seen) == 4 and seen[-1] == acc["after_finetuning"] == report["steps"][0]["accuracy_after_finetuning"]
