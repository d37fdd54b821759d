"""Resumable training state: one ``weights_only``-loadable file per finished epoch.

:func:`~prunepilot.training.fit` with ``checkpoint_dir`` writes ``epoch-NNN.pt`` after every
epoch. Each file holds everything the next epoch depends on, as tensors and plain containers
only (so ``torch.load(..., weights_only=True)`` reads it and it cannot run code):

* the model's state dict, the optimizer's and the learning-rate scheduler's state;
* the global torch RNG state and the state of the training loader's random generators (the
  shuffling order), so a resumed run draws the same batches as an uninterrupted one;
* the history so far, the epoch, the steps per epoch and the :class:`TrainConfig` (a resume
  under another config is refused).

Files are written to a temporary name and renamed, so a crash never leaves half a checkpoint.
With the same seed, data and thread count, resuming from epoch ``k`` gives bit-identical
weights to training straight through.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from prunepilot.errors import CheckpointError

STATE_FORMAT = "prunepilot.train-state/v1"
_NAME = re.compile(r"^epoch-(\d{3,})\.pt$")


def state_path(checkpoint_dir: str | os.PathLike[str], epoch: int) -> Path:
    """The file of the state after ``epoch`` (1-based) epochs."""
    return Path(checkpoint_dir) / f"epoch-{epoch:03d}.pt"


def list_states(checkpoint_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every state file in the folder, oldest first."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def loader_generators(loader: Iterable[Any]) -> list[torch.Generator]:
    """The random generators a DataLoader draws its shuffling (and worker seeds) from."""
    gens: list[torch.Generator] = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        gen = getattr(owner, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in gens):
            gens.append(gen)
    sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    gen = getattr(sampler, "generator", None)
    if isinstance(gen, torch.Generator) and all(gen is not g for g in gens):
        gens.append(gen)
    return gens


def save_state(path: Path, state: Mapping[str, Any], keep: int | None = None) -> Path:
    """Write one training state atomically; keep only the newest ``keep`` files (None: all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"format": STATE_FORMAT, **state}, tmp)
    os.replace(tmp, path)
    if keep is not None:
        for _epoch, old in list_states(path.parent)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_latest_state(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The newest readable training state in the folder, or None when there is none.

    Raises:
        CheckpointError: a state file exists but cannot be read with ``weights_only=True``, or
            it was not written by :func:`fit`.
    """
    states = list_states(checkpoint_dir)
    if not states:
        return None
    epoch, path = states[-1]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated files, foreign pickles
        raise CheckpointError(
            f"training state {str(path)!r} cannot be loaded with weights_only=True "
            f"({type(exc).__name__}: {exc}); delete it to resume from the epoch before"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a prunepilot training state (format {STATE_FORMAT!r}); "
            "point checkpoint_dir at a folder written by fit(checkpoint_dir=...)"
        )
    if int(state.get("epoch", -1)) != epoch:
        raise CheckpointError(f"{str(path)!r} says epoch {state.get('epoch')!r}, its name says {epoch}")
    return dict(state)
