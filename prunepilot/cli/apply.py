"""``prunepilot apply``: a searched policy onto a production model, fine-tuned, exported, verified."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from prunepilot.cli.common import DEFAULT_SHAPE_HELP, fail_on_error, parse_shape
from prunepilot.errors import ConfigError

if TYPE_CHECKING:
    from prunepilot.apply import ApplyConfig

console = Console()

#: Fine-tuning defaults for ``--epochs N`` without ``--finetune``: a fine-tune, not a training from scratch.
FINETUNE_LR = 0.01


def register(app: typer.Typer) -> None:
    """Add the ``apply`` command to ``app``."""
    app.command("apply")(apply)


def apply(
    policy: Path = typer.Option(..., "--policy", help="Policy JSON (`prunepilot pareto RUN --export policy.json`)."),
    model: str = typer.Option(..., "--model", help="Model spec: zoo name, torchvision:NAME or pkg.module:fn."),
    out: Path = typer.Option(..., "--out", help="Output folder (pruned model, exports, checkpoints, report.json)."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="The model's trained weights (a state dict; loaded with weights_only=True)."
    ),
    data: str | None = typer.Option(
        None, "--data", help="Dataset for BN recalibration, fine-tuning, test accuracy: digits, fashion-mnist, cifar10."
    ),
    data_root: Path | None = typer.Option(None, "--data-root", help="Dataset folder (default: $PRUNEPILOT_DATA)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Training batch size (default: the data's)."),
    finetune: Path | None = typer.Option(
        None, "--finetune", help="TrainConfig YAML: optimizer, lr, schedule, epochs, seed (see prunepilot.training)."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", help=f"Fine-tuning epochs (overrides --finetune's; alone: SGD, lr {FINETUNE_LR}, cosine)."
    ),
    distill: bool = typer.Option(False, "--distill", help="Distil the unpruned model's logits while fine-tuning."),
    temperature: float = typer.Option(4.0, "--temperature", help="KD temperature T (with --distill)."),
    alpha: float = typer.Option(0.9, "--alpha", help="KD weight of the soft term in [0, 1] (with --distill)."),
    iterative: int = typer.Option(1, "--iterative", help="Reach the policy in K steps, fine-tuning after each."),
    export: str = typer.Option(
        "", "--export", help="Comma-separated formats to export and check: onnx, torchscript, exported-program."
    ),
    tolerance: float = typer.Option(1e-4, "--tolerance", help="Largest absolute output difference of an export."),
    onnx_exporter: str = typer.Option("dynamo", "--onnx-exporter", help="ONNX exporter: dynamo or legacy."),
    device: str | None = typer.Option(
        None, "--device", help="Latency device (configs/devices); default: the search's, else local-cpu."
    ),
    latency_batch: int | None = typer.Option(
        None, "--latency-batch", help="Latency batch size (default: the search's, else the device's)."
    ),
    no_latency: bool = typer.Option(False, "--no-latency", help="Skip the latency measurement."),
    by_ratio: bool = typer.Option(
        False, "--by-ratio", help="Apply the keep ratios to a wider/narrower variant (groups by name, else order)."
    ),
    importance: str | None = typer.Option(
        None,
        "--importance",
        help="Channel criterion (default: the policy's): l1, l2, bn-scale, taylor, hessian, "
        "random, grad-magnitude, snip, grasp, synflow, thinet. The written policy.json records it.",
    ),
    reconstruct: bool = typer.Option(
        False,
        "--reconstruct",
        help="After pruning, refit the pruned layers' consumers by least squares to the "
        "unpruned model's outputs on calibration images (He et al. 2017, ThiNet), recalibrate BN; then fine-tune.",
    ),
    at_init: bool = typer.Option(
        False,
        "--at-init",
        help="Prune a freshly initialised model (seeded by the fine-tune seed; no --checkpoint) "
        "with --importance snip, grasp, synflow or random, then train it (--epochs N / --finetune).",
    ),
    input_shape: str | None = typer.Option(
        None,
        "--input-shape",
        help=f"Example input N,C,H,W (default: from --data, else {DEFAULT_SHAPE_HELP}).",
    ),
    num_classes: int = typer.Option(10, "--num-classes", help="Classes of the model head (ignored with --data)."),
    in_channels: int = typer.Option(3, "--in-channels", help="Input channels (ignored with --data)."),
    ignore: list[str] = typer.Option([], "--ignore", help="Module never to prune (default: the search's)."),
    train_device: str = typer.Option("auto", "--train-device", help="Fine-tune on auto, cpu or cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an --out folder an earlier apply wrote."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted apply in --out from its last epoch."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Apply a policy to a model: prune, recalibrate BN, fine-tune (optionally with KD), export, verify.

    Writes OUT/{pruned.json,policy.json,model.pt} (load with prunepilot.load_pruned(OUT)), the
    exports, OUT/checkpoints/ and OUT/report.json, and prints the verification table.
    Accuracies are on the TEST split: this is the final report.
    """
    from prunepilot.apply import apply_to_model, print_report

    with fail_on_error():
        cfg = build_config(
            policy=policy,
            model=model,
            out=out,
            checkpoint=checkpoint,
            data=data,
            data_root=data_root,
            batch_size=batch_size,
            finetune=finetune,
            epochs=epochs,
            distill=distill,
            temperature=temperature,
            alpha=alpha,
            iterative=iterative,
            export=export,
            tolerance=tolerance,
            onnx_exporter=onnx_exporter,
            device=device,
            latency_batch=latency_batch,
            no_latency=no_latency,
            by_ratio=by_ratio,
            importance=importance,
            reconstruct=reconstruct,
            at_init=at_init,
            input_shape=input_shape,
            num_classes=num_classes,
            in_channels=in_channels,
            ignore=ignore,
            train_device=train_device,
            overwrite=overwrite,
            resume=resume,
        )
        result = apply_to_model(cfg, progress=not quiet, log=None if quiet else console.log)
    print_report(result.report, console)
    console.print(f"wrote {result.out} (report.json; load with prunepilot.load_pruned({str(result.out)!r}))")
    if not result.ok:
        failed = [c["format"] for c in result.report["exports"] if not c["ok"]]
        console.print(f"[bold red]export check failed:[/] {', '.join(failed)} (see report.json)")
        raise typer.Exit(code=1)


def build_config(
    *,
    model: str,
    out: Path,
    policy: Path | None = None,
    uniform: float | None = None,
    round_to: int = 1,
    checkpoint: Path | None = None,
    data: str | None = None,
    data_root: Path | None = None,
    batch_size: int | None = None,
    finetune: Path | None = None,
    epochs: int | None = None,
    distill: bool = False,
    temperature: float = 4.0,
    alpha: float = 0.9,
    iterative: int = 1,
    export: str = "",
    tolerance: float = 1e-4,
    onnx_exporter: str = "dynamo",
    device: str | None = None,
    latency_batch: int | None = None,
    no_latency: bool = False,
    by_ratio: bool = False,
    input_shape: str | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
    ignore: list[str] | None = None,
    train_device: str = "auto",
    overwrite: bool = False,
    resume: bool = False,
    importance: str | None = None,
    reconstruct: bool = False,
    at_init: bool = False,
) -> ApplyConfig:
    """The :class:`~prunepilot.apply.ApplyConfig` the flags describe (errors name the flag).

    ``prunepilot apply`` and ``prunepilot prune`` (``uniform``/``round_to``, no fine-tuning) both
    build theirs here; the defaults are the flags' defaults.
    """
    from pydantic import ValidationError

    from prunepilot.apply import ApplyConfig, parse_formats
    from prunepilot.data import DataConfig
    from prunepilot.errors import PrunepilotError
    from prunepilot.training import DistillConfig, TrainConfig, load_train_config

    formats = parse_formats(export)  # an unsupported format fails first, listing the supported ones
    if epochs is not None and epochs < 0:
        raise ConfigError(f"--epochs {epochs} must be >= 0")
    if iterative < 1:
        raise ConfigError(f"--iterative {iterative} must be >= 1 (1 is one-shot pruning)")
    train = load_train_config(finetune) if finetune is not None else None
    if epochs is not None:
        train = train.model_copy(update={"epochs": epochs}) if train else TrainConfig(epochs=epochs, lr=FINETUNE_LR)
    try:
        data_cfg = None
        if data is not None:
            extra = {"batch_size": batch_size} if batch_size else {}
            data_cfg = DataConfig(name=data, root=data_root, **extra)
        kd = DistillConfig(temperature=temperature, alpha=alpha) if distill else None
        return ApplyConfig(
            policy=policy,
            uniform=uniform,
            round_to=round_to,
            model=model,
            out=out,
            checkpoint=checkpoint,
            data=data_cfg,
            input_shape=parse_shape(input_shape) if input_shape else None,
            num_classes=num_classes,
            in_channels=in_channels,
            ignored_layers=tuple(ignore) if ignore else None,
            by_ratio=by_ratio,
            importance=importance,
            reconstruct=reconstruct,
            at_init=at_init,
            train=train,
            distill=kd,
            iterative=iterative,
            train_device=train_device,  # type: ignore[arg-type]
            export=formats,
            export_tolerance=tolerance,
            onnx_exporter=onnx_exporter,  # type: ignore[arg-type]
            device=device,
            latency_batch_size=latency_batch,
            measure_latency=not no_latency,
            overwrite=overwrite,
            resume=resume,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, PrunepilotError):  # a validator's own error (e.g. an unknown data name): as written
            raise cause from None
        if not first["loc"]:  # a flag combination (ApplyConfig's own check): its message names the flags
            raise ConfigError(str(first["msg"]).removeprefix("Value error, ")) from None
        where = ".".join(str(x) for x in first["loc"]) or "value"
        raise ConfigError(f"{where}: {first['msg']} (input {first.get('input')!r})") from None
