"""Saving and safely loading model weights.

Checkpoints are loaded with ``torch.load(..., weights_only=True)``: only tensors and plain
containers are unpickled, never arbitrary objects, so a checkpoint cannot run code. Loading is
strict: every key must be present with the right shape, and the error lists what does not fit.

Example:
    >>> from prunepilot.models import build_model, load_model, save_checkpoint
    >>> save_checkpoint(build_model("resnet20"), "r20.pt", val_acc=0.91)
    >>> model = load_model("resnet20", "r20.pt")
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunepilot.errors import CheckpointError
from prunepilot.models._registry import build_model

CHECKPOINT_FORMAT = "prunepilot.checkpoint/v1"
"""Value of the ``format`` key written by :func:`save_checkpoint`."""

_WRAPPER_KEYS = ("state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DistributedDataParallel, torch.compile
_MAX_LISTED = 10
_REFUSALS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"GLOBAL (\S+) was not an allowed global"), lambda m: f"the global {m.group(1)!r}"),
    (
        re.compile(r"unsupported GLOBAL (\S+) whose module (\S+) is blocked"),
        lambda m: f"the global {m.group(1)!r} (its module {m.group(2)!r} is never allowed)",
    ),
    (re.compile(r"call reduce for unrecognized function ([^\n]+)"), lambda m: f"a call of {m.group(1).strip()}"),
    (
        re.compile(r"allowlisted via `add_safe_globals`,? but got ([^\n]+)"),
        lambda m: f"an object of {m.group(1).strip()}",
    ),
)
"""torch's weights-only refusals, as (pattern, description of what was refused)."""
_TORCH_BOILERPLATE = (
    "Weights only load failed",
    "In PyTorch 2.6",
    "(1)",
    "(2)",
    "Please file an issue",
    "Check the documentation of torch.load",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NEVER_UNPICKLES = (
    "prunepilot never unpickles objects (unpickling can run code): checkpoints are read with "
    "weights_only=True only, and there is no option to read them otherwise."
)
_RESAVE_HINT = "Re-save only the weights where the model class is importable: torch.save(model.state_dict(), path)"


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], **meta: Any) -> Path:
    """Save a model's state dict and JSON-able metadata.

    The file holds ``{"format", "state_dict", "meta"}``; it is written to a temporary file and
    renamed, so readers never see half a checkpoint.

    Args:
        model: The model whose weights to save (tensors are copied to the CPU).
        path: Destination file; parent folders are created.
        **meta: Metadata (accuracy, spec, config, ...); must survive ``json.dumps``.

    Returns:
        The path written.

    Raises:
        CheckpointError: If a metadata value is not plain JSON.
    """
    plain: dict[str, Any] = {}
    for key, value in meta.items():
        try:
            # the JSON round trip also turns str/float subclasses (torch.__version__) into plain
            # types, which weights_only loading requires
            plain[key] = json.loads(json.dumps(value))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint metadata {key!r}={value!r} is not plain JSON ({exc}); pass str, int, "
                "float, bool, None, lists or dicts of those"
            ) from exc
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "state_dict": state, "meta": plain}, tmp)
    os.replace(tmp, out)
    return out


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load weights into ``model`` in place, strictly and without unpickling code.

    Accepts a raw state dict or a dict holding one under ``state_dict`` or ``model`` (as saved by
    :func:`save_checkpoint` and most training scripts). A ``module.`` prefix on every key
    (``DataParallel``) or ``_orig_mod.`` (``torch.compile``) is stripped.

    Args:
        model: Model with the architecture the checkpoint was saved from.
        path: Checkpoint file.

    Returns:
        ``model``, with the checkpoint's weights.

    Raises:
        CheckpointError: If the file is missing or unreadable, holds pickled objects other than
            tensors and containers, or its keys or shapes do not match the model (the first
            ten offending keys are listed with their shapes).
    """
    state = _read_state_dict(Path(path))
    _check_matches(model, state, Path(path))
    model.load_state_dict(state, strict=True)
    return model


def load_model(
    spec: str,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
) -> nn.Module:
    """Build a model from a spec and, if given, load a checkpoint into it.

    Args:
        spec: Model spec (see :func:`prunepilot.models.build_model`).
        checkpoint: Checkpoint file, or None for random initialisation.
        num_classes: Number of output classes.
        in_channels: Channels of the input images.

    Returns:
        The model (training mode, as built).

    Raises:
        ModelSpecError: If the spec does not resolve.
        CheckpointError: If the checkpoint cannot be loaded into the model.
    """
    model = build_model(spec, num_classes=num_classes, in_channels=in_channels)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        where = "is a directory" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {str(path)!r} {where}; pass the path of a .pt/.pth file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(str(exc))
        if refused is None:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is not a readable torch checkpoint: the weights_only=True unpickler "
                f"stopped ({_last_reason(exc)}). {_NEVER_UNPICKLES} If it was written by torch.save of a whole "
                f"object, {_RESAVE_HINT[0].lower()}{_RESAVE_HINT[1:]}"
            ) from None  # torch's own text advises weights_only=False: not relayed
        raise CheckpointError(
            f"checkpoint {str(path)!r} was refused: it pickles {refused}, not only tensors and plain containers "
            f"(a whole nn.Module or another object was saved). {_NEVER_UNPICKLES} {_RESAVE_HINT}"
        ) from None
    except Exception as exc:  # truncated files, non-torch files, zip errors
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a readable torch checkpoint: {type(exc).__name__}: {exc}"
        ) from exc
    state = _unwrap(obj, path)
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _refused_global(text: str) -> str | None:
    """The global torch's weights-only unpickler refused, described, or None if it names none."""
    for pattern, describe in _REFUSALS:
        found = pattern.search(text)
        if found:
            return describe(found)
    return None


def _last_reason(exc: Exception) -> str:
    """The unpickler's own message, without torch's advice to load with ``weights_only=False``."""
    text = _ANSI.sub("", str(exc))
    _, _, reason = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (reason or text).splitlines()]
    kept = [line for line in lines if line and not any(line.startswith(b) for b in _TORCH_BOILERPLATE)]
    return kept[0] if kept else type(exc).__name__


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(obj).__name__}, not a state dict; expected a "
            f"dict of tensors, or a dict with one under {_WRAPPER_KEYS[0]!r} or {_WRAPPER_KEYS[1]!r}"
        )
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a state dict: keys {not_tensors[:_MAX_LISTED]} do not "
            f"hold tensors; expected a dict of tensors, or a dict with one under "
            f"{_WRAPPER_KEYS[0]!r} or {_WRAPPER_KEYS[1]!r}"
        )
    return {str(k): v for k, v in obj.items()}


def _check_matches(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    problems: list[str] = []
    for key, tensor in expected.items():
        if key not in state:
            problems.append(f"missing {key} {tuple(tensor.shape)}")
        elif state[key].shape != tensor.shape:
            problems.append(
                f"shape mismatch {key}: checkpoint {tuple(state[key].shape)} vs model {tuple(tensor.shape)}"
            )
    problems += [f"unexpected {key} {tuple(t.shape)}" for key, t in state.items() if key not in expected]
    if problems:
        more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match the {type(model).__name__} model: "
            + "; ".join(problems[:_MAX_LISTED])
            + more
            + ". Build the model with the spec, num_classes and in_channels it was trained with."
        )
