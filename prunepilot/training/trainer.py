"""Training and evaluating classifiers: :func:`fit`, :func:`evaluate_accuracy`, and
:class:`TrainConfig` (read from a file with :func:`load_train_config`). Base models trained once
and cached are in :mod:`prunepilot.training.base_models`.

``fit`` is one plain loop: an optimizer and a per-step learning-rate schedule from
:class:`TrainConfig`, and a ``loss_fn(model, inputs, targets) -> loss`` hook (cross-entropy by
default) where distillation or other losses plug in.

Example:
    >>> from prunepilot.data import DataConfig, build_data
    >>> from prunepilot.models import build_model
    >>> from prunepilot.training import TrainConfig, evaluate_accuracy, fit
    >>> data = build_data(DataConfig(name="digits"))
    >>> model = build_model("simplecnn", in_channels=1)
    >>> history = fit(model, data.train, TrainConfig(epochs=3), val_loader=data.val)
    >>> evaluate_accuracy(model, data.test)  # doctest: +SKIP
    0.97
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from prunepilot.errors import CheckpointError, ConfigError, DataError
from prunepilot.training.resume import load_latest_state, loader_generators, save_state, state_path

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(model, inputs, targets) -> scalar loss``; it runs the forward pass itself."""

_OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter], TrainConfig], torch.optim.Optimizer]] = {
    "sgd": lambda p, c: torch.optim.SGD(
        p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=c.momentum > 0
    ),
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay),
}

_SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda progress: 1.0,
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
    "step": lambda progress: 0.1 ** ((progress >= 0.5) + (progress >= 0.75)),
}


class TrainConfig(BaseModel):
    """How to train a classifier; hashable and JSON-serialisable."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    epochs: int = Field(default=10, ge=0)
    """Passes over the training loader (0 leaves the model untrained)."""

    lr: float = Field(default=0.05, gt=0)
    """Peak learning rate."""

    momentum: float = Field(default=0.9, ge=0, lt=1)
    """SGD momentum (Nesterov when > 0); ignored by adam and adamw."""

    weight_decay: float = Field(default=5e-4, ge=0)
    """L2 penalty (decoupled for adamw)."""

    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    """Optimizer name."""

    schedule: Literal["cosine", "constant", "step"] = "cosine"
    """Learning-rate schedule over all steps: cosine decay to 0, constant, or x0.1 at 50% and
    again at 75% of the steps."""

    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    """Label smoothing of the default cross-entropy loss."""

    seed: int = 0
    """Seed set with ``torch.manual_seed`` before training (and before building base models)."""

    max_batches_per_epoch: int | None = Field(default=None, gt=0)
    """Cap on batches per epoch (None: the whole loader), for fast runs."""


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    """The default loss hook: cross-entropy of ``model(inputs)`` against ``targets``."""

    def loss_fn(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(inputs), targets, label_smoothing=label_smoothing)

    return loss_fn


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, loader: Iterable[Any], max_batches: int | None = None) -> float:
    """Top-1 accuracy of ``model`` over ``loader``, in eval mode and without gradients.

    Args:
        model: A classifier returning ``(N, num_classes)`` logits.
        loader: Yields ``(inputs, targets)`` batches.
        max_batches: Stop after this many batches (None: all).

    Returns:
        Accuracy in [0, 1]. The model's previous train/eval mode is restored.

    Raises:
        DataError: If the loader yields no samples.
    """
    was_training = model.training
    device = _device(model)
    model.eval()
    correct = total = 0
    try:
        for i, (inputs, targets) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            logits = model(inputs.to(device))
            correct += int((logits.argmax(dim=1) == targets.to(device)).sum())
            total += int(targets.shape[0])
    finally:
        model.train(was_training)
    if total == 0:
        raise DataError("evaluate_accuracy: the loader yielded no samples (max_batches=0 or empty data)")
    return correct / total


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    cfg: TrainConfig,
    *,
    val_loader: Iterable[Any] | None = None,
    progress: bool = False,
    loss_fn: LossFn | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    keep_checkpoints: int | None = None,
    mixed_precision: bool = False,
    channels_last: bool = False,
    description: str = "training",
) -> list[dict[str, Any]]:
    """Train ``model`` in place.

    Args:
        model: The model to train (left in training mode).
        train_loader: Yields ``(inputs, targets)`` batches; must have a ``len()``.
        cfg: Optimizer, schedule, epochs and seed.
        val_loader: If given, validation accuracy is measured after every epoch.
        progress: Show a rich progress bar (epoch, running loss and training accuracy).
        loss_fn: ``loss_fn(model, inputs, targets) -> loss``; default cross-entropy with
            ``cfg.label_smoothing`` (see :func:`~prunepilot.training.distillation_loss` for KD).
            Training accuracy is counted from the model's outputs during the hook's forward
            passes (the last one per batch).
        checkpoint_dir: Write a resumable training state after every epoch here
            (``epoch-NNN.pt``, loadable with ``weights_only=True``; see
            :mod:`prunepilot.training.resume`).
        resume: Continue from the newest state in ``checkpoint_dir`` (model, optimizer,
            schedule, RNG and shuffling state), if there is one; the result is the same as an
            uninterrupted run with the same seed. The state must come from the same config.
        keep_checkpoints: Keep only this many newest states (None: all).
        mixed_precision: Autocast to bfloat16 (or float16 with loss scaling where bfloat16 is
            not supported). CUDA only: on a CPU it is an error, as CPU autocast rarely speeds
            training up and changes numerics.
        channels_last: Use the channels-last memory format for the model and 4-D inputs
            (faster convolutions on recent GPUs; no gain on a CPU).
        description: Label of the progress bar.

    Returns:
        One record per epoch: ``epoch``, ``train_loss``, ``train_acc``, ``val_acc`` (or None),
        ``lr`` (at the epoch's end) and ``seconds``. After a resume the records of the epochs
        before it come from the checkpoint.

    Raises:
        ConfigError: ``resume`` without ``checkpoint_dir``, a state written under another
            config, or mixed precision on a CPU.
        CheckpointError: the newest state cannot be read or does not fit the model.
    """
    torch.manual_seed(cfg.seed)
    loss_fn = loss_fn or cross_entropy_loss(cfg.label_smoothing)
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    if cfg.max_batches_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.max_batches_per_epoch)
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    device = _device(model)
    if resume and checkpoint_dir is None:
        raise ConfigError("fit(resume=True) needs checkpoint_dir: the folder its epoch states were written to")
    amp_dtype = _amp_dtype(device) if mixed_precision else None
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = _OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)
    schedule = _SCHEDULES[cfg.schedule]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step / total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume:
        state = load_latest_state(checkpoint_dir)  # type: ignore[arg-type]
        if state is not None:
            _check_resumable(state, cfg, steps_per_epoch, Path(checkpoint_dir))  # type: ignore[arg-type]
            try:
                model.load_state_dict(state["model"], strict=True)
            except RuntimeError as exc:
                raise CheckpointError(
                    f"the training state in {str(checkpoint_dir)!r} does not fit this model: {exc}"
                ) from exc
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"]["torch"])
            for gen, gen_state in zip(loader_generators(train_loader), state["rng"]["loader"], strict=False):
                gen.set_state(gen_state)
            history, start_epoch = list(state["history"]), int(state["epoch"])
    outputs: list[torch.Tensor] = []
    hook = model.register_forward_hook(
        lambda _m, _i, out: outputs.append(out.detach()) if isinstance(out, torch.Tensor) else None
    )
    bar = _progress_bar(progress)
    task = (
        bar.add_task(description, total=cfg.epochs * steps_per_epoch, completed=start_epoch * steps_per_epoch)
        if bar is not None
        else None
    )
    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            start = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            for step, (inputs, targets) in enumerate(train_loader):
                if step >= steps_per_epoch:
                    break
                inputs, targets = inputs.to(device), targets.to(device)
                if channels_last and inputs.dim() == 4:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                outputs.clear()
                with _autocast(device, amp_dtype):
                    loss = loss_fn(model, inputs, targets)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss_sum += float(loss.detach()) * targets.shape[0]
                seen += targets.shape[0]
                if outputs and outputs[-1].shape[0] == targets.shape[0]:
                    correct += int((outputs[-1].argmax(dim=1) == targets).sum())
                if bar is not None and task is not None:
                    bar.update(
                        task,
                        advance=1,
                        description=f"{description} epoch {epoch + 1}/{cfg.epochs} "
                        f"loss {loss_sum / max(seen, 1):.4f} acc {correct / max(seen, 1):.3f}",
                    )
            val_acc = evaluate_accuracy(model, val_loader) if val_loader is not None else None
            model.train()
            history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": loss_sum / max(seen, 1),
                    "train_acc": correct / max(seen, 1),
                    "val_acc": val_acc,
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - start,
                }
            )
            if checkpoint_dir is not None:
                save_state(
                    state_path(checkpoint_dir, epoch + 1),
                    {
                        "epoch": epoch + 1,
                        "steps_per_epoch": steps_per_epoch,
                        "config": cfg.model_dump(mode="json"),
                        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": {
                            "torch": torch.get_rng_state(),
                            "loader": [g.get_state() for g in loader_generators(train_loader)],
                        },
                        "history": history,
                    },
                    keep=keep_checkpoints,
                )
    finally:
        hook.remove()
        if bar is not None:
            bar.stop()
    return history


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype for mixed precision on ``device`` (CUDA only)."""
    if device.type != "cuda":
        raise ConfigError(
            f"mixed precision is supported on CUDA devices only; the model is on {device.type!r}. "
            "Train in float32 on a CPU (prunepilot apply turns it off there by itself)"
        )
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _check_resumable(state: dict[str, Any], cfg: TrainConfig, steps_per_epoch: int, folder: Path) -> None:
    saved = state.get("config")
    if saved != cfg.model_dump(mode="json"):
        raise ConfigError(
            f"the training state in {str(folder)!r} was written with train config {saved}, not "
            f"{cfg.model_dump(mode='json')}; resume with the same config, or delete the folder to start over"
        )
    if int(state.get("steps_per_epoch", -1)) != steps_per_epoch:
        raise ConfigError(
            f"the training state in {str(folder)!r} had {state.get('steps_per_epoch')} steps per epoch, this "
            f"loader has {steps_per_epoch}; resume with the same data config"
        )


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar.start()
    return bar


def load_train_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a :class:`TrainConfig` from a YAML (or JSON) file of its fields.

    Example file::

        epochs: 5
        optimizer: sgd
        lr: 0.01
        schedule: cosine

    Raises:
        ConfigError: the file is missing, not a mapping, or a field is invalid (names the field
            and the accepted values).
    """
    import yaml
    from pydantic import ValidationError

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"train config {str(file)!r} does not exist; give a YAML file of TrainConfig fields")
    try:
        raw = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"train config {str(file)!r} is not readable YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"train config {str(file)!r} must hold a mapping of fields ({', '.join(TrainConfig.model_fields)}), "
            f"got {type(raw).__name__}"
        )
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        fields = ", ".join(TrainConfig.model_fields)
        raise ConfigError(f"train config {str(file)!r}: field {where!r}: {first['msg']} (fields: {fields})") from None
