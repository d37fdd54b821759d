"""``prunepilot prune``: apply a uniform ratio or a policy file to a model, with a report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import typer
from rich.console import Console
from rich.table import Table

from prunepilot.cli.common import fail_on_error, parse_shape
from prunepilot.errors import ConfigError

console = Console()


def register(app: typer.Typer) -> None:
    """Add the ``prune`` command to ``app``."""
    app.command("prune")(prune)


def prune(
    out: Path = typer.Option(..., "--out", help="Output folder for the pruned model, policy and report."),
    model: str | None = typer.Option(
        None, "--model", help="Model spec: zoo name, torchvision:NAME or pkg.module:fn."
    ),
    run: Path | None = typer.Option(
        None, "--run", help="Take --model, --checkpoint and --data from a search run folder."
    ),
    uniform: float | None = typer.Option(
        None, "--uniform", help="Keep this ratio of every group, in (0, 1]."
    ),
    policy: Path | None = typer.Option(
        None, "--policy", help="A policy JSON file (e.g. from `prunepilot pareto --export`)."
    ),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Trained weights (state dict)."),
    data: str | None = typer.Option(
        None, "--data", help="Dataset for accuracy before/after: digits, fashion-mnist, cifar10."
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Dataset folder (default: $PRUNEPILOT_DATA)."
    ),
    num_classes: int = typer.Option(
        10, "--num-classes", help="Classes of the model head (ignored with --data)."
    ),
    in_channels: int = typer.Option(3, "--in-channels", help="Input channels (ignored with --data)."),
    input_shape: str | None = typer.Option(
        None, "--input-shape", help="Example input N,C,H,W, e.g. 1,3,32,32 (default: from --data)."
    ),
    importance: str = typer.Option(
        "l1", "--importance", help="Channel criterion: l1, l2, bn-scale, taylor, hessian, random."
    ),
    round_to: int = typer.Option(1, "--round-to", help="Round widths to multiples of this."),
    ignore: list[str] = typer.Option([], "--ignore", help="Module name never to prune (repeatable)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
) -> None:
    """Prune a model structurally and write it with its policy and a report.

    Ratios are keep ratios: ``--uniform 0.5`` keeps half the channels of every group.
    """
    with fail_on_error():
        if run is not None:
            model, checkpoint, data, data_root = _from_run(run, model, checkpoint, data, data_root)
        if model is None:
            raise ConfigError("give --model SPEC (or --run RUN to take it from a search run)")
        report = run_prune(
            model=model,
            out=out,
            uniform=uniform,
            policy_path=policy,
            checkpoint=checkpoint,
            data=data,
            data_root=data_root,
            num_classes=num_classes,
            in_channels=in_channels,
            input_shape=input_shape,
            importance=importance,
            round_to=round_to,
            ignore=ignore,
            overwrite=overwrite,
        )
    _print_report(report)


def _from_run(
    run: Path, model: str | None, checkpoint: Path | None, data: str | None, data_root: Path | None
) -> tuple[str, Path | None, str | None, Path | None]:
    """Fill model, checkpoint and data from a run folder (explicit flags win)."""
    from prunepilot.search.store import RunStore

    store = RunStore(run)
    cfg = store.read_config()
    info = store.read_info()
    ckpt = info.get("base_checkpoint") or cfg["model"].get("checkpoint")
    root = cfg["data"].get("root")
    return (
        model or cfg["model"]["spec"],
        checkpoint or (Path(ckpt) if ckpt else None),
        data or cfg["data"]["name"],
        data_root or (Path(root) if root else None),
    )


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to clobber an existing non-empty folder unless ``overwrite``; check writability."""
    occupied = any(out.iterdir()) if out.is_dir() else out.exists()
    if occupied:
        if not overwrite:
            raise ConfigError(
                f"--out {str(out)!r} already exists; pass --overwrite to replace it (nothing was changed)"
            )
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {str(out)!r} is not writable: {exc.strerror}") from None


def run_prune(
    *,
    model: str,
    out: Path,
    uniform: float | None,
    policy_path: Path | None,
    checkpoint: Path | None,
    data: str | None,
    data_root: Path | None,
    num_classes: int,
    in_channels: int,
    input_shape: str | None,
    importance: str,
    round_to: int,
    ignore: list[str],
    overwrite: bool,
) -> dict[str, Any]:
    """The ``prune`` command as a function; returns the report it writes."""
    from prunepilot.models import load_model
    from prunepilot.pruning import (
        PruningPolicy,
        PruningSpace,
        apply_policy,
        canonical_importance,
        recalibrate_bn,
    )
    from prunepilot.pruning.io import save_pruned
    from prunepilot.training import evaluate_accuracy

    if (uniform is None) == (policy_path is None):
        raise ConfigError("give exactly one of --uniform RATIO or --policy POLICY.json")
    if uniform is not None and not 0 < uniform <= 1:
        raise ConfigError(f"--uniform {uniform} is outside (0, 1]; it is the share of channels to KEEP")
    try:
        criterion = canonical_importance(importance)
    except ValueError as exc:
        raise ConfigError(f"--importance: {exc}") from None
    bundle = None
    if data is not None:
        from prunepilot.data import DataConfig, build_data

        bundle = build_data(DataConfig(name=data, root=data_root))
        num_classes, in_channels = bundle.num_classes, bundle.input_shape[0]
        shape: tuple[int, ...] = (1, *bundle.input_shape)
    elif input_shape is not None:
        shape = parse_shape(input_shape, flag="--input-shape")
    else:
        raise ConfigError("give --input-shape N,C,H,W (e.g. 1,3,32,32) or --data to take it from a dataset")
    if policy_path is not None:
        given = PruningPolicy.load(policy_path)  # fail on a bad file before anything heavy
    prepare_out_dir(out, overwrite)

    base = load_model(model, checkpoint, num_classes=num_classes, in_channels=in_channels).eval()
    example = torch.zeros(*shape)
    space = PruningSpace.build(base, example, ignored_layers=tuple(ignore))
    if uniform is not None:
        pol = PruningPolicy.uniform(space, uniform, round_to=round_to, importance=criterion)
    else:
        pol = given
    calib = [(x, y) for x, y in bundle.calib] if bundle is not None else None
    pruned = apply_policy(base, pol, example, space=space, importance=criterion, calib_batches=calib)
    report: dict[str, Any] = {
        "model": model,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "input_shape": list(shape),
        "importance": criterion,
        "groups": len(space.groups),
        "params_before": space.base_params,
        "params_after": space.params(pol.channels),
        "macs_before": space.base_macs,
        "macs_after": space.macs(pol.channels),
        "mean_keep_ratio": pol.mean_keep(),
    }
    if bundle is not None:
        report["accuracy_before"] = evaluate_accuracy(base, bundle.test)
        report["accuracy_after_no_recalibration"] = evaluate_accuracy(pruned, bundle.test)
        recalibrate_bn(pruned, bundle.calib)
        report["accuracy_after"] = evaluate_accuracy(pruned, bundle.test)
        report["accuracy_split"] = "test"
    save_pruned(
        out,
        pruned,
        pol,
        spec=model,
        num_classes=num_classes,
        in_channels=in_channels,
        input_shape=shape,
        ignored_layers=ignore,
    )
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _print_report(report: dict[str, Any]) -> None:
    table = Table(title=f"pruned {report['model']}")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row("params", f"{report['params_before']:,}", f"{report['params_after']:,}")
    table.add_row("MACs / sample", f"{report['macs_before']:,}", f"{report['macs_after']:,}")
    if "accuracy_before" in report:
        table.add_row(
            "accuracy (test, BN recalibrated)",
            f"{report['accuracy_before']:.4f}",
            f"{report['accuracy_after']:.4f}",
        )
    console.print(table)
