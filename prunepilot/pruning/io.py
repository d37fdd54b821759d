"""Saving and loading pruned models without pickle.

A pruned-model folder holds ``pruned.json`` (how to rebuild: the original model spec, its
constructor arguments, the example input shape), ``policy.json`` and ``model.pt`` (a plain
state dict). :func:`load_pruned` rebuilds the original architecture from its spec, prunes it
to the policy's widths, and loads the weights with ``weights_only=True``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunepilot.errors import CheckpointError
from prunepilot.pruning import adapter
from prunepilot.pruning.policy import PruningPolicy

PRUNED_FORMAT = "prunepilot.pruned/v1"


def save_pruned(
    out_dir: str | Path,
    model: nn.Module,
    policy: PruningPolicy,
    *,
    spec: str,
    num_classes: int,
    in_channels: int,
    input_shape: Sequence[int],
    ignored_layers: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a pruned model folder; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy.save(out / "policy.json")
    torch.save(model.state_dict(), out / "model.pt")
    manifest = {
        "format": PRUNED_FORMAT,
        "model": {"spec": spec, "num_classes": num_classes, "in_channels": in_channels},
        "input_shape": [int(s) for s in input_shape],
        "ignored_layers": list(ignored_layers),
        "policy": "policy.json",
        "state_dict": "model.pt",
        **(extra or {}),
    }
    (out / "pruned.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def load_pruned(path: str | Path) -> nn.Module:
    """Rebuild a pruned model from a folder written by :func:`save_pruned` (no pickle).

    Raises:
        CheckpointError: the folder, manifest or weights are missing or do not match.
    """
    from prunepilot.models import build_model  # models depend on nothing here; import late

    folder = Path(path)
    manifest_path = folder / "pruned.json"
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{str(folder)!r} is not a pruned-model folder: {manifest_path.name} is missing"
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != PRUNED_FORMAT:
        raise CheckpointError(
            f"{manifest_path} has format {manifest.get('format')!r}; expected {PRUNED_FORMAT!r}"
        )
    policy = PruningPolicy.load(folder / manifest["policy"])
    spec = manifest["model"]
    model = build_model(spec["spec"], num_classes=spec["num_classes"], in_channels=spec["in_channels"])
    example = torch.zeros(*manifest["input_shape"])
    adapter.prune_to_widths(
        model, example, policy.channels, importance="l1", ignored=tuple(manifest.get("ignored_layers", ()))
    )
    try:
        state = torch.load(folder / manifest["state_dict"], map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as exc:
        raise CheckpointError(f"weights in {folder} do not fit the rebuilt pruned model: {exc}") from exc
    return model
