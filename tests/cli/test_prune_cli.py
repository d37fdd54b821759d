"""``prunepilot prune`` end to end, and its errors."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from prunepilot.cli import app
from prunepilot.pruning.io import load_pruned

runner = CliRunner()


def test_version() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and "prunepilot 0." in res.output


def test_prune_uniform_then_policy(tmp_path) -> None:
    out = tmp_path / "a"
    res = runner.invoke(
        app,
        ["prune", "--model", "resnet20", "--input-shape", "1,3,32,32", "--uniform", "0.5", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["macs_after"] < 0.4 * report["macs_before"]
    model = load_pruned(out)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # the written policy applies again through --policy
    res = runner.invoke(
        app,
        [
            "prune",
            "--model",
            "resnet20",
            "--input-shape",
            "1,3,32,32",
            "--policy",
            str(out / "policy.json"),
            "--out",
            str(tmp_path / "b"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b" / "report.json").read_text())["macs_after"] == report["macs_after"]


def test_prune_with_data_reports_accuracy(tmp_path) -> None:
    res = runner.invoke(
        app,
        [
            "prune",
            "--model",
            "simplecnn",
            "--data",
            "digits",
            "--uniform",
            "0.75",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert 0.0 <= report["accuracy_after"] <= 1.0 and report["accuracy_split"] == "test"


def test_prune_errors(tmp_path) -> None:
    base = ["prune", "--input-shape", "1,3,32,32", "--out", str(tmp_path / "x")]
    cases = [
        (["--model", "nosuchnet", "--uniform", "0.5"], "nosuchnet"),
        (["--model", "no_such_pkg.mod:build", "--uniform", "0.5"], "no_such_pkg"),
        (["--model", "resnet20", "--uniform", "1.5"], "1.5"),
        (["--model", "resnet20"], "exactly one"),
        (["--model", "resnet20", "--uniform", "0.5", "--importance", "magic"], "magic"),
        (["--model", "resnet20", "--policy", str(tmp_path / "none.json")], "does not exist"),
    ]
    for args, needle in cases:
        res = runner.invoke(app, base + args)
        assert res.exit_code == 2, (args, res.output)
        assert needle in res.output, (args, res.output)
    bad_ckpt = tmp_path / "bad.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, bad_ckpt)
    res = runner.invoke(
        app, base + ["--model", "resnet20", "--uniform", "0.5", "--checkpoint", str(bad_ckpt)]
    )
    assert res.exit_code == 2 and "conv1.weight" in res.output, res.output


def test_prune_refuses_existing_out(tmp_path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    args = [
        "prune",
        "--model",
        "resnet20",
        "--input-shape",
        "1,3,32,32",
        "--uniform",
        "0.5",
        "--out",
        str(out),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert (out / "keep.txt").read_text() == "user file"
    assert runner.invoke(app, args + ["--overwrite"]).exit_code == 0


def test_policy_for_other_model_is_refused(tmp_path) -> None:
    out = tmp_path / "a"
    assert (
        runner.invoke(
            app,
            [
                "prune",
                "--model",
                "resnet20",
                "--input-shape",
                "1,3,32,32",
                "--uniform",
                "0.5",
                "--out",
                str(out),
            ],
        ).exit_code
        == 0
    )
    res = runner.invoke(
        app,
        [
            "prune",
            "--model",
            "resnet32",
            "--input-shape",
            "1,3,32,32",
            "--policy",
            str(out / "policy.json"),
            "--out",
            str(tmp_path / "b"),
        ],
    )
    assert res.exit_code == 2 and "does not match" in res.output
