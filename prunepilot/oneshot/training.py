"""The expensive phase of both one-shot methods: a step loop that checkpoints and resumes exactly.

:func:`train_steps` runs ``steps`` optimizer steps of a caller's ``step_fn`` (which does the
forward and backward passes: the sandwich rule for AutoSlim, one random encoding for
MetaPruning) with SGD and a cosine schedule, and every ``checkpoint_every`` steps writes one
file (temporary name, then rename) holding plain tensors and containers only:

* the module's state dict, the optimizer's and the scheduler's state, the step, the loss
  history, and the global torch RNG state;
* a fingerprint of the config (a resume under another config is refused).

It loads with ``torch.load(..., weights_only=True)``. Randomness does not depend on where a run
was interrupted: the batch of step ``s`` is a function of ``(seed, s)`` (:class:`BatchStream`
permutes the data per epoch with its own seeded generator) and each step re-seeds the RNGs it
uses from ``(seed, s)``. So a run resumed from step ``k`` gives bit-identical weights to an
uninterrupted run with the same seed and thread count (tested).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from prunepilot.errors import CheckpointError

STATE_FORMAT = "prunepilot.oneshot-train/v1"

StepFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Generator], float]
"""``step_fn(step, inputs, targets, generator) -> loss``: forward and backward (gradients are
zeroed before and the optimizer steps after); draw randomness from ``generator``."""


class OneShotTraining(BaseModel):
    """How the supernet (AutoSlim) or PruningNet (MetaPruning) is trained."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(600, ge=1, description="Optimizer steps (one training batch each).")
    batch_size: int | None = Field(None, ge=1, description="Training batch size (None: the data config's).")
    lr: float = Field(0.02, gt=0, description="Peak learning rate (SGD, cosine decay to 0 over `steps`).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (Nesterov).")
    weight_decay: float = Field(5e-5, ge=0, description="L2 penalty.")
    checkpoint_every: int = Field(50, ge=1, description="Write a resumable checkpoint every this many steps.")


@dataclass(frozen=True)
class TrainResult:
    """What a (possibly resumed) training run did."""

    steps: int
    resumed_from: int
    seconds: float
    losses: list[float]
    checkpoint: Path | None


class BatchStream:
    """Deterministic training batches: the batch of step ``s`` depends only on ``(seed, s)``.

    Each epoch is a fresh permutation from a generator seeded with ``(seed, epoch)``; the last
    partial batch is dropped.
    """

    def __init__(self, dataset: Dataset[Any], batch_size: int, seed: int) -> None:
        self.dataset, self.seed = dataset, seed
        self.n = len(dataset)  # type: ignore[arg-type]
        if self.n == 0:
            raise ValueError("BatchStream: the training dataset is empty")
        self.batch_size = min(batch_size, self.n)
        self.per_epoch = max(1, self.n // self.batch_size)
        self._perm: tuple[int, torch.Tensor] | None = None

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(_mix(self.seed, epoch, 0x5EED))
            self._perm = (epoch, torch.randperm(self.n, generator=gen))
        idx = self._perm[1][i * self.batch_size : (i + 1) * self.batch_size]
        if isinstance(self.dataset, TensorDataset):
            x, y = self.dataset.tensors[0][idx], self.dataset.tensors[1][idx]
            return x, y
        items = [self.dataset[int(j)] for j in idx]
        return torch.stack([it[0] for it in items]), torch.as_tensor([int(it[1]) for it in items])


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256(json.dumps(values).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator for step ``step``; also re-seeds torch's global RNG (dropout) from it."""
    s = _mix(seed, step)
    torch.manual_seed(s)
    return torch.Generator().manual_seed(s)


def fingerprint(payload: Any) -> str:
    """Short hash of a JSON-able payload (config identity of a checkpoint)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_steps(
    module: nn.Module,
    step_fn: StepFn,
    stream: BatchStream,
    cfg: OneShotTraining,
    *,
    seed: int,
    checkpoint: Path | None = None,
    identity: Any = None,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``module``'s trainable parameters for ``cfg.steps`` steps, resuming if possible.

    Args:
        module: Holds every trainable parameter (those with ``requires_grad``).
        step_fn: Forward and backward for one batch.
        stream: The training batches.
        cfg: Steps, optimizer and checkpoint interval.
        seed: Seed of the batch order and of every step's randomness.
        checkpoint: File to write/resume; None trains without checkpoints.
        identity: Anything that must match for a checkpoint to be resumed (with ``cfg``, ``seed``).
        stop_after: Stop (after checkpointing) once this many steps are done: a deliberate
            interruption, for tests and time-boxed runs.
        log: Progress messages.

    Raises:
        CheckpointError: the checkpoint is unreadable or was written under another config.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
    )
    ident = fingerprint({"cfg": cfg.model_dump(mode="json"), "seed": seed, "identity": identity})
    start, losses = 0, []
    if checkpoint is not None and checkpoint.is_file():
        state = load_state(checkpoint, ident)
        module.load_state_dict(state["module"], strict=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, losses = int(state["step"]), [float(v) for v in state["losses"]]
        if log:
            log(f"resumed from step {start}/{cfg.steps} ({checkpoint})")
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    began = time.perf_counter()
    module.train()
    for step in range(start, end):
        x, y = stream.batch(step)
        gen = step_generator(seed, step)
        opt.zero_grad(set_to_none=True)
        losses.append(float(step_fn(step, x, y, gen)))
        opt.step()
        sched.step()
        done = step + 1
        if checkpoint is not None and (done % cfg.checkpoint_every == 0 or done == end):
            save_state(checkpoint, ident, done, module, opt, sched, losses)
        if log and (done % max(1, cfg.steps // 10) == 0 or done == end):
            log(f"step {done}/{cfg.steps} loss {sum(losses[-20:]) / len(losses[-20:]):.4f}")
    module.eval()
    return TrainResult(end, start, time.perf_counter() - began, losses, checkpoint)


def save_state(
    path: Path, ident: str, step: int, module: nn.Module, opt: torch.optim.Optimizer, sched: Any, losses: list[float]
) -> None:
    """Write one training state atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(
        {
            "format": STATE_FORMAT,
            "identity": ident,
            "step": step,
            "module": {k: v.detach().clone() for k, v in module.state_dict().items()},
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": torch.get_rng_state(),
            "losses": list(losses),
        },
        tmp,
    )
    os.replace(tmp, path)


def load_state(path: Path, ident: str | None = None) -> dict[str, Any]:
    """Read a training state with ``weights_only=True``; check its config fingerprint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated files, foreign pickles
        raise CheckpointError(
            f"one-shot checkpoint {str(path)!r} cannot be loaded with weights_only=True "
            f"({type(exc).__name__}: {exc}); delete it to train from scratch"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a one-shot training state (format {STATE_FORMAT!r})")
    if ident is not None and state.get("identity") != ident:
        raise CheckpointError(
            f"one-shot checkpoint {str(path)!r} was written under another config or seed; delete it "
            "or set strategy.settings.checkpoint_dir to another folder"
        )
    return dict(state)
