"""``prunepilot prune`` end to end, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert report["macs"]["after"] < 0.4 * report["macs"]["before"]
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
    assert json.loads((tmp_path / "b" / "report.json").read_text())["macs"] == report["macs"]


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
    accuracy = report["accuracy"]  # apply's report: prune is apply without fine-tuning
    assert 0.0 <= accuracy["after_pruning"] <= 1.0 and accuracy["split"] == "test"
    assert accuracy["after_finetuning"] is None and report["finetune"]["epochs_per_step"] == 0


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
    res = runner.invoke(app, base + ["--model", "resnet20", "--uniform", "0.5", "--checkpoint", str(bad_ckpt)])
    assert res.exit_code == 2 and "conv1.weight" in res.output, res.output


def _uniform_args(out: Path, *extra: str) -> list[str]:
    shape = ["--input-shape", "1,3,16,16"]
    return ["prune", "--model", "testing:tiny-convnet", *shape, "--uniform", "0.5", "--out", str(out), *extra]


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (subfolders included)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_prune_refuses_existing_out(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    res = runner.invoke(app, _uniform_args(out))
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert "--resume" not in res.output  # prune has no --resume; the advice must not offer it
    assert _tree(out) == {"keep.txt": b"user file"}


def test_overwrite_keeps_a_user_folder_with_every_file(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    (out / "sub" / "deeper").mkdir(parents=True)
    (out / "notes.txt").write_text("notes")
    (out / "sub" / "data.csv").write_text("1,2,3")
    (out / "sub" / "deeper" / "model.pt").write_text("not ours")
    before = _tree(out)
    res = runner.invoke(app, _uniform_args(out, "--overwrite"))
    assert res.exit_code == 2, res.output
    assert "refuses to delete" in res.output and "not written by prunepilot" in res.output
    assert _tree(out) == before


def test_overwrite_never_replaces_a_file(tmp_path: Path) -> None:
    out = tmp_path / "results.txt"
    out.write_text("a user's file")
    res = runner.invoke(app, _uniform_args(out, "--overwrite"))
    assert res.exit_code == 2 and "is a file, not a folder" in res.output, res.output
    assert out.read_text() == "a user's file"


def test_overwrite_replaces_an_earlier_prune_only_after_the_inputs_load(tmp_path: Path) -> None:
    out = tmp_path / "pruned"
    assert runner.invoke(app, _uniform_args(out)).exit_code == 0
    before = _tree(out)
    bad_ckpt = tmp_path / "bad.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, bad_ckpt)
    bad_inputs = [
        ["--checkpoint", str(bad_ckpt)],  # the checkpoint does not fit
        ["--data", "no-such-data"],  # the data name is not a dataset
        ["--importance", "taylor"],  # needs data
    ]
    for extra in bad_inputs:
        res = runner.invoke(app, _uniform_args(out, "--overwrite", *extra))
        assert res.exit_code == 2, (extra, res.output)
        assert res.exception is None or isinstance(res.exception, SystemExit), (extra, res.exception)
        assert _tree(out) == before, extra
    (out / "stale.txt").write_text("from before")
    res = runner.invoke(app, _uniform_args(out, "--overwrite", "--uniform", "0.75"))
    assert res.exit_code == 0, res.output
    assert not (out / "stale.txt").exists() and (out / "pruned.json").is_file()


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


def test_prune_applies_the_policy_files_importance_unless_told(tmp_path: Path) -> None:
    first = tmp_path / "l2"
    assert runner.invoke(app, _uniform_args(first, "--importance", "l2")).exit_code == 0
    policy = first / "policy.json"
    assert json.loads(policy.read_text())["importance"] == "l2"
    shape = ["--input-shape", "1,3,16,16"]
    args = ["prune", "--model", "testing:tiny-convnet", *shape, "--policy", str(policy)]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "warning" not in res.output
    assert json.loads((tmp_path / "a" / "report.json").read_text())["importance"] == "l2"
    # an explicit, different --importance wins with a warning naming both, and is what is recorded
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--importance", "bn-scale"])
    assert res.exit_code == 0, res.output
    assert "warning" in res.output and "'bn-scale'" in res.output and "'l2'" in res.output
    assert json.loads((tmp_path / "b" / "report.json").read_text())["importance"] == "bn-scale"
    assert json.loads((tmp_path / "b" / "policy.json").read_text())["importance"] == "bn-scale"


def test_prune_refuses_bad_policy_files_before_touching_out(tmp_path: Path) -> None:
    made = tmp_path / "made"
    assert runner.invoke(app, _uniform_args(made)).exit_code == 0
    raw = json.loads((made / "policy.json").read_text())
    group = next(iter(raw["channels"]))
    bad = {
        "missing-group": ({**raw, "channels": {k: v for k, v in raw["channels"].items() if k != group}}, group),
        "disagreeing": ({**raw, "channels": {**raw["channels"], group: raw["group_channels"][group]}}, "disagree"),
        "taylor-no-data": ({**raw, "importance": "taylor"}, "--data"),
        "unknown-importance": ({**raw, "importance": "magic"}, "'magic'"),
    }
    for name, (policy, needle) in bad.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(policy))
        out = tmp_path / f"out-{name}"
        res = runner.invoke(
            app,
            [
                "prune",
                "--model",
                "testing:tiny-convnet",
                "--input-shape",
                "1,3,16,16",
                "--policy",
                str(path),
                "--out",
                str(out),
            ],
        )
        assert res.exit_code == 2, (name, res.output)
        assert needle in res.output, (name, res.output)
        assert not out.exists(), name


def test_prune_is_apply_without_fine_tuning_and_torchvision_defaults_to_224(tmp_path: Path) -> None:
    out = tmp_path / "tv"
    res = runner.invoke(app, ["prune", "--model", "torchvision:resnet18", "--uniform", "0.5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "prunepilot.apply-report/v1" and report["policy_match"] == "uniform"
    assert report["input_shape"] == [1, 3, 224, 224]  # no --input-shape, no --data: the torchvision default
    assert report["latency"] is None and report["exports"] == [] and report["finetune"]["train"] is None
    assert json.loads((out / "pruned.json").read_text())["input_shape"] == [1, 3, 224, 224]
    assert {"apply.json", "model.pt", "policy.json", "pruned.json", "report.json"} <= {p.name for p in out.iterdir()}
    assert load_pruned(out)(torch.zeros(1, 3, 224, 224)).shape == (1, 10)
