"""``apply_to_model``: one readable path from a policy file to a verified, exported pruned model.

    read policy (or --uniform RATIO), data, model (+ checkpoint, weights_only)
    -> match the policy to the model (signature, or --by-ratio; a uniform one is made for it) -> prepare OUT
    (--at-init: a freshly initialised, seeded model of the architecture instead of a checkpoint)
    -> prune (one shot, or step 1 of K) -> recalibrate BN (``prune_and_recalibrate``, the search's path)
    -> (--reconstruct) refit the pruned layers' consumers to the unpruned outputs, recalibrate BN
    -> fine-tune (optionally distilling the unpruned model), checkpointing every epoch;
       with K steps: prune further, recalibrate, fine-tune, K times
    -> save (state dict + policy + manifest: prunepilot.load_pruned rebuilds it without pickle)
    -> verify: params, MACs, test accuracy at every stage, latency vs the search's figure,
       exports (ONNX, TorchScript, torch.export) each compared with eager
    -> OUT/report.json

Accuracies here are on the dataset's **test** split: this is the final report, after the search
chose the policy on held-out training data. ``prunepilot prune`` is this pipeline without
fine-tuning, export or latency.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunepilot.apply.config import ApplyConfig
from prunepilot.apply.export import export_and_check, export_batches
from prunepilot.apply.latency import DEFAULT_DEVICE, SearchContext, measure_latency, search_context
from prunepilot.apply.outdir import check_resume, prepare_out_dir, write_config
from prunepilot.apply.portability import build_space, fit_policy
from prunepilot.apply.schedule import interpolate_widths
from prunepilot.data import DataBundle, build_data
from prunepilot.errors import ConfigError, one_of
from prunepilot.pruning import (
    PruningPolicy,
    PruningSpace,
    count_macs_params,
    prune_and_recalibrate,
    recalibrate_bn,
)
from prunepilot.pruning.adapter import DATA_DEPENDENT, IMPORTANCE_CRITERIA
from prunepilot.pruning.io import save_pruned
from prunepilot.pruning.reconstruct import reconstruct
from prunepilot.training import distillation_loss, evaluate_accuracy, fit

REPORT_FORMAT = "prunepilot.apply-report/v1"
UNIFORM_IMPORTANCE = "l1"
"""The channel criterion of ``uniform`` when ``importance`` is not given."""
SPLIT_NOTE = (
    "the dataset's test split: this is the final report; the search scored candidates on data held "
    "out from the training split"
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class ApplyResult:
    """What :func:`apply_to_model` produced.

    Attributes:
        model: The applied model (pruned, recalibrated, fine-tuned), on the CPU, in eval mode.
        policy: The policy applied (adapted to this model when ``by_ratio`` was used).
        report: The verification report (also in ``out/report.json``).
        out: The output folder.
    """

    model: nn.Module
    policy: PruningPolicy
    report: dict[str, Any]
    out: Path

    @property
    def ok(self) -> bool:
        """True when every requested export passed its check."""
        return all(check["ok"] for check in self.report["exports"])


def apply_to_model(cfg: ApplyConfig, *, progress: bool = False, log: Log | None = None) -> ApplyResult:
    """Apply ``cfg.policy`` to ``cfg.model``, recover accuracy, save, export and verify.

    Example:
        >>> cfg = ApplyConfig(policy="policy.json", model="resnet20", checkpoint="r20.pt",
        ...                   out="out/r20-pruned", data=DataConfig(name="cifar10"),
        ...                   train=TrainConfig(epochs=5, lr=0.01), distill=DistillConfig(),
        ...                   export=("onnx", "torchscript"))              # doctest: +SKIP
        >>> result = apply_to_model(cfg, progress=True)                    # doctest: +SKIP
        >>> prunepilot.load_pruned("out/r20-pruned")                       # doctest: +SKIP

    Raises:
        PolicyError: the policy does not fit the model (lists the groups that differ).
        CheckpointError: the checkpoint does not load with ``weights_only=True`` or does not fit.
        ConfigError: a bad flag combination, an occupied or unwritable ``out``, an unknown device.
    """
    say = log or (lambda _msg: None)
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    # 1. inputs: fail on anything bad before touching the output folder
    policy = PruningPolicy.load(cfg.policy) if cfg.policy is not None else None
    if policy is not None and cfg.importance is not None:  # replaces the policy's; the saved policy records it
        policy = policy.model_copy(update={"importance": cfg.importance})
    criterion = policy.importance if policy is not None else (cfg.importance or UNIFORM_IMPORTANCE)
    search = search_context(policy) if policy is not None else SearchContext()
    if cfg.distill is not None and not cfg.fine_tunes():
        raise ConfigError("--distill needs fine-tuning: give --epochs N (N > 0) or --finetune CONFIG.yaml")
    if cfg.fine_tunes() and cfg.data is None:
        raise ConfigError("fine-tuning needs data: give --data NAME (and --data-root or $PRUNEPILOT_DATA)")
    if criterion in DATA_DEPENDENT and cfg.data is None:
        free = one_of(sorted(set(IMPORTANCE_CRITERIA) - DATA_DEPENDENT))
        where = f"--importance {criterion!r}"
        if cfg.importance is None:
            where = f"the policy's importance {criterion!r} ({str(cfg.policy)!r})"
        raise ConfigError(
            f"{where} scores channels on calibration data: give --data NAME, or choose a data-free criterion "
            f"with --importance (or the policy's importance field): {free}"
        )
    data = build_data(cfg.data) if cfg.data is not None else None
    num_classes, in_channels, input_shape = _shapes(cfg, data)
    ignored = cfg.ignored_layers if cfg.ignored_layers is not None else (search.ignored_layers or ())
    device = cfg.device or search.device or DEFAULT_DEVICE
    if cfg.measure_latency:
        from prunepilot.hw_models.devices import load_device

        load_device(device)  # an unknown device fails now, not after fine-tuning
    from prunepilot.models import load_model

    seed = cfg.train.seed if cfg.train is not None else 0
    if cfg.at_init:
        torch.manual_seed(seed)  # pruning at initialisation: a fresh, seeded model of the architecture
    base = load_model(cfg.model, cfg.checkpoint, num_classes=num_classes, in_channels=in_channels).eval()
    if cfg.at_init and data is not None:
        recalibrate_bn(base, data.calib)  # real BN statistics for scoring (as a training step would see)
    say(f"matching the policy to {cfg.model}")
    signature = policy.signature if policy is not None else None
    space, trace_x = build_space(base, input_shape, num_classes, ignored_layers=ignored, signature=signature)
    if policy is not None:
        target, match = fit_policy(policy, space, by_ratio=cfg.by_ratio)
    else:
        assert cfg.uniform is not None  # exactly one of the two (ApplyConfig checks)
        target = PruningPolicy.uniform(space, cfg.uniform, round_to=cfg.round_to, importance=criterion)
        match = "uniform"

    # 2. the output folder (only now: a bad input above leaves nothing behind)
    # (only fine-tuning leaves checkpoints to --resume from: advise it only then)
    prepare_out_dir(cfg.out, overwrite=cfg.overwrite, resume=cfg.resume, resumable=cfg.fine_tunes())
    if cfg.resume:
        check_resume(cfg.out, cfg.resume_key())
    else:
        write_config(cfg.out, cfg.resume_key())

    # 3. prune in one shot and recalibrate BN (the "after pruning" figure, the model to fine-tune when K = 1)
    calib = [(x, y) for x, y in data.calib] if data is not None else None
    unrecalibrated: list[float] = []

    def _pruned(model: nn.Module) -> None:  # before BN recalibration: the time to prune, the accuracy without
        seconds["prune"] = time.perf_counter() - tic
        if data is not None:
            unrecalibrated.append(evaluate_accuracy(model, data.test))

    tic = time.perf_counter()
    kept: dict[tuple[str, str], tuple[int, ...]] = {}
    pruned = prune_and_recalibrate(
        base, target, trace_x, space=space, calib_batches=calib, kept=kept, before_recalibration=_pruned
    )
    accuracy = _accuracy_section(base, pruned, unrecalibrated[0] if unrecalibrated else None, data)
    reconstruction = None
    if cfg.reconstruct and data is not None and calib is not None:  # calibration images only, never val/test
        say("reconstructing the pruned layers' consumers")
        tic = time.perf_counter()
        reconstruction = reconstruct(pruned, base, calib, kept).to_dict()
        seconds["reconstruct"] = time.perf_counter() - tic
        accuracy["after_reconstruction"] = evaluate_accuracy(pruned, data.test)

    # 4. recover: BN recalibration, then fine-tuning (K steps when iterative)
    tic = time.perf_counter()
    model, steps, training = _recover(
        cfg, base, pruned, accuracy.get("after_pruning"), space, target, trace_x, data, ignored, progress, say
    )
    seconds["finetune"] = time.perf_counter() - tic
    model = model.cpu().eval()
    if data is not None and cfg.fine_tunes():  # the last step's figure is this model's (not evaluated twice)
        last = steps[-1].get("accuracy_after_finetuning") if steps else None
        accuracy["after_finetuning"] = last if last is not None else evaluate_accuracy(model, data.test)

    # 5. save: state dict + policy + manifest (prunepilot.load_pruned rebuilds it without pickle)
    save_pruned(
        cfg.out,
        model,
        target,
        spec=cfg.model,
        num_classes=num_classes,
        in_channels=in_channels,
        input_shape=input_shape,
        ignored_layers=ignored,
        extra={"apply_config": "apply.json"},
    )

    # 6. verify: size, latency, exports
    example_full = torch.zeros(input_shape)
    macs_before, params_before = count_macs_params(base, example_full)
    macs_after, params_after = count_macs_params(model, example_full)
    latency: dict[str, Any] | None = None
    if cfg.measure_latency:
        say(f"measuring latency on {device}")
        tic = time.perf_counter()
        latency = measure_latency(
            base,
            model,
            input_shape,
            device=device,
            batch_size=cfg.latency_batch_size or search.batch_size,
            search=search,
            comparable=match == "signature",
        )
        seconds["latency"] = time.perf_counter() - tic
    exports = []
    if cfg.export:
        tic = time.perf_counter()
        example, check_batch = export_batches(cfg.check_batch_size, data, input_shape)
        for fmt in cfg.export:
            say(f"exporting {fmt}")
            check = export_and_check(
                model,
                fmt,
                cfg.out,
                example,
                check_batch,
                tolerance=cfg.export_tolerance,
                onnx_exporter=cfg.onnx_exporter,
            )
            exports.append(check.to_dict())
        seconds["export"] = time.perf_counter() - tic
    seconds["total"] = time.perf_counter() - started

    report = {
        "format": REPORT_FORMAT,
        "model": cfg.model,
        "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else None,
        "policy": str(cfg.policy) if cfg.policy is not None else f"uniform {cfg.uniform:g}",
        "policy_match": match,
        "signature": space.signature,
        "input_shape": list(input_shape),
        "groups": len(space.groups),
        "mean_keep_ratio": target.mean_keep(),
        "removed_blocks": list(target.removed_blocks),
        "importance": target.importance,
        "at_init": {"criterion": target.importance, "seed": seed} if cfg.at_init else None,
        "reconstruction": reconstruction,
        "params": _before_after(params_before, params_after),
        "macs": _before_after(macs_before, macs_after),
        "accuracy": accuracy,
        "search": {"accuracy": search.accuracy, "accuracy_split": "val (held out from train)", "run": search.run},
        "finetune": training,
        "steps": steps,
        "latency": latency,
        "exports": exports,
        "seconds": seconds,
        "versions": _versions(),
    }
    (cfg.out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return ApplyResult(model=model, policy=target, report=report, out=cfg.out)


def _recover(
    cfg: ApplyConfig,
    base: nn.Module,
    pruned: nn.Module,
    pruned_accuracy: float | None,
    space: PruningSpace,
    target: PruningPolicy,
    trace_x: torch.Tensor,
    data: DataBundle | None,
    ignored: tuple[str, ...],
    progress: bool,
    say: Log,
) -> tuple[nn.Module, list[dict[str, Any]], dict[str, Any]]:
    """Fine-tune ``pruned`` (already BN-recalibrated); with ``cfg.iterative = K > 1`` start again from
    ``base`` and prune in K steps, recalibrating BN and fine-tuning after each."""
    train_device = _train_device(cfg.train_device)
    cuda = train_device.type == "cuda"
    teacher = copy.deepcopy(base).to(train_device) if cfg.distill is not None and cfg.fine_tunes() else None
    loss_fn = distillation_loss(teacher, cfg.distill) if teacher is not None else None
    training: dict[str, Any] = {
        "epochs_per_step": cfg.train.epochs if cfg.train is not None else 0,
        "iterative": cfg.iterative,
        "train": cfg.train.model_dump(mode="json") if cfg.train is not None else None,
        "distill": cfg.distill.model_dump(mode="json") if cfg.distill is not None else None,
        "train_device": str(train_device),
        "mixed_precision": cuda,
        "channels_last": cuda and trace_x.dim() == 4,
        "note": "mixed precision and channels-last are used on CUDA only; off on a CPU",
    }
    schedule = [target.channels] if cfg.iterative == 1 else interpolate_widths(space, target, cfg.iterative)
    current, steps = base, []
    for i, widths in enumerate(schedule, start=1):
        if cfg.iterative == 1:
            current = pruned  # already pruned to the target in one shot
        else:
            step_space = space if i == 1 else PruningSpace.build(current, trace_x, ignored_layers=ignored)
            step_policy = PruningPolicy.from_widths(step_space, widths, importance=target.importance)
            calib = [(x, y) for x, y in data.calib] if data is not None else None
            current = prune_and_recalibrate(current, step_policy, trace_x, space=step_space, calib_batches=calib)
        step: dict[str, Any] = {"step": i, "mean_keep_ratio": _mean_keep(widths, space)}
        if data is not None and cfg.iterative == 1:
            step["accuracy_after_pruning"] = pruned_accuracy
        elif data is not None:
            step["accuracy_after_pruning"] = evaluate_accuracy(current, data.test)
        if cfg.fine_tunes() and data is not None and cfg.train is not None:
            folder = cfg.out / "checkpoints" / (f"step-{i}" if cfg.iterative > 1 else "")
            say(f"fine-tuning step {i}/{len(schedule)}" if cfg.iterative > 1 else "fine-tuning")
            current = current.to(train_device)
            step["history"] = fit(
                current,
                data.train,
                cfg.train,
                progress=progress,
                loss_fn=loss_fn,
                checkpoint_dir=folder,
                resume=cfg.resume,
                keep_checkpoints=cfg.keep_checkpoints,
                mixed_precision=cuda,
                channels_last=training["channels_last"],
                description=f"step {i}/{len(schedule)}" if cfg.iterative > 1 else "fine-tune",
            )
            current = current.cpu()
            step["accuracy_after_finetuning"] = evaluate_accuracy(current, data.test)
        steps.append(step)
    return current, steps, training


def _accuracy_section(
    base: nn.Module, pruned: nn.Module, without: float | None, data: DataBundle | None
) -> dict[str, Any]:
    """Test accuracy before pruning, after pruning (``without`` BN recalibration), and after pruning +
    BN recalibration (``pruned``, recalibrated on the calibration images, a subset of train)."""
    if data is None:
        return {"split": None, "note": "no --data given: accuracy not measured"}
    return {
        "split": "test",
        "note": SPLIT_NOTE,
        "before_pruning": evaluate_accuracy(base, data.test),
        "after_pruning_no_recalibration": without,
        "after_pruning": evaluate_accuracy(pruned, data.test),
        "after_finetuning": None,
    }


def _shapes(cfg: ApplyConfig, data: DataBundle | None) -> tuple[int, int, tuple[int, ...]]:
    """Classes, input channels and example input: from the data, else the flags, else the spec's default."""
    from prunepilot.models import default_input_shape

    if data is not None:
        shape = cfg.input_shape or (1, *data.input_shape)
        return data.num_classes, data.input_shape[0], tuple(shape)
    shape = cfg.input_shape or default_input_shape(cfg.model, cfg.in_channels)
    return cfg.num_classes, int(shape[1]), tuple(shape)


def _train_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--train-device cuda: CUDA is not available here; use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _mean_keep(widths: dict[str, int], space: PruningSpace) -> float:
    return sum(widths[g.name] / g.channels for g in space.groups) / max(1, len(space.groups))


def _before_after(before: int, after: int) -> dict[str, Any]:
    return {"before": int(before), "after": int(after), "ratio": after / before if before else None}


def _versions() -> dict[str, str]:
    from prunepilot.hw_models.base import runtime_versions

    return runtime_versions("torchvision", "onnx", "onnxruntime")
