"""AutoSlim (Yu & Huang, "AutoSlim: Towards One-Shot Architecture Search for Channel Numbers", 2019).

Two phases:

1. **Slimmable training** of the :class:`~prunepilot.oneshot.supernet.Supernet` (the expensive,
   checkpointed phase). Every step follows the *sandwich rule*: the widest network (every group
   at full width), the narrowest (every group at the lower bound) and ``random_widths`` random
   width assignments (each group drawn independently on the lattice) run on the same batch;
   the widest learns from the labels and, with *in-place distillation*, every other width
   learns from the widest's (detached) soft predictions. Gradients of all widths accumulate
   into one optimizer step.
2. **Greedy slimming** (no training): from full width, each step tries removing one channel
   step (``step_fraction`` of the group's channels, on the lattice) from every group, scores
   each trial on held-out batches (BN recalibrated at that width), and keeps the best -- by
   accuracy as in the paper, or by accuracy lost per millisecond saved. Only trials that
   lower the predicted latency are considered, so the path is strictly monotone in latency.
   It stops once the predicted latency is at or below ``stop_ms``; every step of the path is
   a candidate, so one run yields a whole front. With ``max_trials`` set, each step scores only
   that many groups, drawn at random (seeded) among those that can still be slimmed: the paper
   scores every group, which on a model with many groups (torchvision mobilenet_v2 has 25)
   makes the search phase alone outlast a whole random search on a CPU.

Differences from the paper, on purpose: we start from the trained base model (channels ordered
by importance) rather than from scratch, share batch-norm statistics across widths and
recalibrate them per width, and step on prunepilot's width lattice over dependency groups.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from prunepilot.oneshot.supernet import Batches, Score, Supernet
from prunepilot.oneshot.training import BatchStream, OneShotTraining, StepFn, TrainResult, train_steps
from prunepilot.oneshot.widths import WidthGrid, Widths

LatencyFn = Callable[[Mapping[str, int]], float]


class SlimmableTraining(OneShotTraining):
    """Slimmable training of the supernet (the sandwich rule)."""

    random_widths: int = Field(2, ge=0, description="Random width assignments per step, besides widest and narrowest.")
    distill: bool = Field(True, description="In-place distillation: non-widest widths learn the widest's soft labels.")


class GreedySlimming(BaseModel):
    """Greedy slimming of a trained supernet on held-out batches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step_fraction: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Channels removed per step, as a fraction of the group's full width (at least one lattice step).",
    )
    criterion: Literal["accuracy", "accuracy_per_ms"] = Field(
        "accuracy", description="Pick the trial with the best accuracy (paper) or the least accuracy lost per ms saved."
    )
    max_steps: int = Field(1000, ge=1, description="Safety cap on path length.")
    max_trials: int | None = Field(
        None,
        ge=1,
        description="Groups scored per step, drawn at random among those that can still be slimmed "
        "(None: every group, as in the paper).",
    )


def sandwich_step(supernet: Supernet, grid: WidthGrid, cfg: SlimmableTraining) -> StepFn:
    """The sandwich-rule step function for :func:`~prunepilot.oneshot.training.train_steps`."""

    def step(_step: int, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> float:
        model = supernet.model
        with supernet.at(grid.full()):
            logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        total = float(loss.detach())
        teacher = F.softmax(logits.detach(), dim=1)
        for widths in [grid.smallest()] + [grid.random(gen) for _ in range(cfg.random_widths)]:
            with supernet.at(widths):
                out = model(x)
            if cfg.distill:
                sub = -(teacher * F.log_softmax(out, dim=1)).sum(1).mean()
            else:
                sub = F.cross_entropy(out, y)
            sub.backward()
            total += float(sub.detach())
        return total

    return step


def train_slimmable(
    supernet: Supernet,
    grid: WidthGrid,
    stream: BatchStream,
    cfg: SlimmableTraining,
    *,
    seed: int,
    checkpoint: Path | None = None,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Slimmable training (sandwich rule, in-place distillation), checkpointed and resumable."""
    identity = {
        "method": "autoslim",
        "grid": {n: list(c) for n, c in grid.choices.items()},
        "signature": supernet.space.signature,
        "importance": supernet.importance,
    }
    return train_steps(
        supernet.model,
        sandwich_step(supernet, grid, cfg),
        stream,
        cfg,
        seed=seed,
        checkpoint=checkpoint,
        identity=identity,
        stop_after=stop_after,
        log=log,
    )


@dataclass(frozen=True)
class PathStep:
    """One point of the greedy slimming path.

    Attributes:
        index: Position on the path (0 = full width).
        widths: Width per group.
        latency_ms: Predicted latency (the evaluator's fast predictor).
        score: Supernet accuracy and loss on the held-out batches (BN recalibrated).
        slimmed: The group slimmed to get here (None for the start).
        trials: Trials scored to choose this step.
    """

    index: int
    widths: Widths
    latency_ms: float
    score: Score
    slimmed: str | None
    trials: int


@dataclass
class SlimmingResult:
    """The path and what it cost."""

    path: list[PathStep] = field(default_factory=list)
    seconds: float = 0.0
    scored: int = 0


def greedy_slim(
    supernet: Supernet,
    grid: WidthGrid,
    latency_of: LatencyFn,
    calib: Batches,
    val: Batches,
    *,
    stop_ms: float,
    cfg: GreedySlimming,
    gen: torch.Generator | None = None,
    log: Callable[[str], None] | None = None,
) -> SlimmingResult:
    """Greedily slim from full width until the predicted latency is at most ``stop_ms``.

    ``gen`` draws the groups scored per step when ``cfg.max_trials`` is set (default: seed 0).
    """
    began = time.perf_counter()
    gen = gen if gen is not None else torch.Generator().manual_seed(0)
    widths = grid.full()
    lat = latency_of(widths)
    score = supernet.score(widths, calib, val)
    result = SlimmingResult([PathStep(0, dict(widths), lat, score, None, 1)], scored=1)
    while lat > stop_ms and len(result.path) <= cfg.max_steps:
        best: tuple[tuple[float, float], str, Widths, float, Score] | None = None
        moves = []
        for name in grid.names:
            w = grid.step_down(widths, name, cfg.step_fraction)
            if w is None:
                continue
            trial = {**widths, name: w}
            trial_lat = latency_of(trial)
            if trial_lat < lat:  # keeps the path strictly monotone in latency
                moves.append((name, trial, trial_lat))
        if cfg.max_trials is not None and len(moves) > cfg.max_trials:
            keep = sorted(torch.randperm(len(moves), generator=gen)[: cfg.max_trials].tolist())
            moves = [moves[i] for i in keep]
        for name, trial, trial_lat in moves:
            s = supernet.score(trial, calib, val)
            if cfg.criterion == "accuracy":
                key = s.key()
            else:
                saved = lat - trial_lat
                key = ((s.accuracy - score.accuracy) / saved, -(s.loss - score.loss) / saved)
            if best is None or key > best[0]:
                best = (key, name, trial, trial_lat, s)
        result.scored += len(moves)
        if best is None:
            break  # every group is at its floor or cannot lower the latency
        _key, name, widths, lat, score = best
        result.path.append(PathStep(len(result.path), dict(widths), lat, score, name, len(moves)))
        if log:
            log(f"slim step {len(result.path) - 1}: {name} -> {widths[name]}, {lat:.3f} ms, acc {score.accuracy:.4f}")
    result.seconds = time.perf_counter() - began
    return result
