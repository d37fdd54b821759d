"""Saving and loading pruned models without pickle.

A pruned-model folder holds ``pruned.json`` (how to rebuild: the original model spec, its
constructor arguments, the example input shape), ``policy.json`` and ``model.pt`` (a plain
state dict). :func:`load_pruned` rebuilds the original architecture from its spec, prunes it
to the policy's widths, replaces its removed blocks by ``nn.Identity()``, and loads the weights
with ``weights_only=True``. A folder is data, possibly from someone else: it reads only files
inside itself, and a spec that is an import path (code) is built only with ``trust_code=True``
(see :mod:`prunepilot.trust`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunepilot.errors import CheckpointError, PolicyError
from prunepilot.pruning import adapter, depth
from prunepilot.pruning.policy import PruningPolicy

PRUNED_FORMAT = "prunepilot.pruned/v1"
_DEFAULT_NAMES = {"policy": "policy.json", "state_dict": "model.pt"}


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
        "policy": _DEFAULT_NAMES["policy"],
        "state_dict": _DEFAULT_NAMES["state_dict"],
        **(extra or {}),
    }
    (out / "pruned.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def load_pruned(path: str | Path, *, trust_code: bool = False) -> nn.Module:
    """Rebuild a pruned model from a folder written by :func:`save_pruned` (no pickle).

    Args:
        path: The folder holding ``pruned.json``.
        trust_code: Allow a model spec that is an import path (``pkg.module:callable``). Such a
            spec is code chosen by whoever wrote the folder, so it is refused by default; zoo
            names and ``torchvision:NAME`` specs always load.

    Raises:
        CheckpointError: the folder, manifest or weights are missing or do not match, or the
            manifest points at a file outside the folder.
        UntrustedCodeError: the spec is an import path and ``trust_code`` is False.
    """
    from prunepilot.models import build_model, load_checkpoint  # models depend on nothing here
    from prunepilot.trust import require_trusted

    folder = Path(path)
    manifest_path = folder / "pruned.json"
    if not manifest_path.is_file():
        raise CheckpointError(f"{str(folder)!r} is not a pruned-model folder: {manifest_path.name} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != PRUNED_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(f"{manifest_path} has format {found!r}; expected {PRUNED_FORMAT!r}")
    spec, num_classes, in_channels, shape, ignored = _read_manifest(manifest, manifest_path)
    require_trusted(model=spec, source=str(manifest_path), trust_code=trust_code)
    policy = PruningPolicy.load(_inside(folder, manifest, "policy", manifest_path))
    weights = _inside(folder, manifest, "state_dict", manifest_path)
    model = build_model(spec, num_classes=num_classes, in_channels=in_channels)
    example = torch.zeros(*shape)
    if policy.removed_blocks:  # only blocks whose removal leaves the identity, as apply_policy allows
        from prunepilot.pruning.space import PruningSpace

        space = PruningSpace.build(model, example, ignored_layers=ignored)
        try:
            for name in policy.removed_blocks:
                space.block(name)
        except PolicyError as exc:
            raise CheckpointError(
                f"{manifest_path}: its policy removes a module that is not a removable block: {exc}"
            ) from exc
    adapter.prune_to_widths(model, example, policy.channels, importance="l1", ignored=ignored)
    depth.remove_blocks(model, policy.removed_blocks)
    return load_checkpoint(model, weights)  # weights_only=True, strict, errors name the keys


def _read_manifest(manifest: dict[str, Any], where: Path) -> tuple[str, int, int, tuple[int, ...], tuple[str, ...]]:
    """The spec, classes, input channels, example shape and ignored layers, type-checked."""
    model = manifest.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("spec"), str):
        raise CheckpointError(
            f"{where}: 'model' must be {{'spec': str, 'num_classes': int, 'in_channels': int}}, got {model!r}"
        )
    sizes: list[int] = []
    for key in ("num_classes", "in_channels"):
        value = model.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"{where}: model.{key} must be a positive integer, got {value!r}")
        sizes.append(value)
    shape = manifest.get("input_shape")
    if (
        not isinstance(shape, list)
        or len(shape) < 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
    ):
        raise CheckpointError(f"{where}: 'input_shape' must be positive sizes like [1, 3, 32, 32], got {shape!r}")
    ignored = manifest.get("ignored_layers", [])
    if not isinstance(ignored, list) or not all(isinstance(n, str) for n in ignored):
        raise CheckpointError(f"{where}: 'ignored_layers' must be a list of module names, got {ignored!r}")
    return model["spec"], sizes[0], sizes[1], tuple(shape), tuple(ignored)


def _inside(folder: Path, manifest: dict[str, Any], key: str, where: Path) -> Path:
    """The file ``manifest[key]`` names, which must lie inside ``folder``."""
    name = manifest.get(key)
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{where}: {key!r} must name a file in the folder, got {name!r}")
    target = (folder / name).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise CheckpointError(
            f"{where}: {key} {name!r} points outside the folder {str(folder)!r}; a pruned-model folder "
            f"only reads its own files (e.g. {key!r}: {_DEFAULT_NAMES[key]!r})"
        )
    return target
