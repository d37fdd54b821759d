"""The committed benchmark bases: which they are, and loading one with its checksum verified.

Every benchmark that needs a trained base loads it here; none trains its own. Each base is a
state dict ``bench/bases/<name>.pt`` beside ``<name>.json`` (recipe, epochs, accuracy, seconds,
sha256), written by ``bench/bases/train.py``. A checkpoint whose sha256 differs from its JSON is
refused: a benchmark never runs on weights other than the ones its figures name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from torch import nn

from prunepilot.data import DataConfig
from prunepilot.errors import CheckpointError
from prunepilot.models import build_model, load_checkpoint

BASES_DIR = Path(__file__).resolve().parent
BASES = {
    "resnet20": "resnet20",
    "mobilenet_v2": "torchvision:mobilenet_v2?adapt_stem=true&stem_stride=1",
}
"""Base name -> model spec."""

DATA = DataConfig(name="fashion-mnist", val_size=5000, seed=0, batch_size=128)
"""The split the bases were trained on (train minus the 5,000 held-out images searches score on)."""


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def base_info(name: str, folder: Path = BASES_DIR) -> dict[str, Any]:
    """The JSON record of base ``name``; a clear error when it is unknown or not trained yet."""
    if name not in BASES:
        raise CheckpointError(f"unknown benchmark base {name!r}; the bases are {sorted(BASES)}")
    path = folder / f"{name}.json"
    if not path.is_file():
        raise CheckpointError(
            f"benchmark base {name!r} is not in {folder} ({path.name} is missing); "
            f"train it with: python bench/bases/train.py --only {name}"
        )
    info: dict[str, Any] = json.loads(path.read_text())
    return info


def load_base(name: str, folder: Path = BASES_DIR) -> tuple[nn.Module, dict[str, Any]]:
    """Build base ``name`` and load its committed weights after checking their sha256.

    Returns:
        ``(model, info)``: the model in eval mode and its JSON record.

    Raises:
        CheckpointError: the base is unknown, missing, or its checkpoint's sha256 is not the
            one its JSON records (the file was changed or replaced).
    """
    info = base_info(name, folder)
    ckpt = folder / str(info["checkpoint"])
    if not ckpt.is_file():
        raise CheckpointError(f"benchmark base {name!r}: checkpoint {ckpt} is missing")
    actual = file_sha256(ckpt)
    if actual != info["sha256"]:
        raise CheckpointError(
            f"benchmark base {name!r}: {ckpt.name} has sha256 {actual} but {name}.json records {info['sha256']}; "
            f"the weights are not the ones the recipe produced: restore them from git or retrain with "
            f"python bench/bases/train.py --only {name}"
        )
    model = build_model(info["spec"], num_classes=int(info["num_classes"]), in_channels=int(info["input_shape"][0]))
    load_checkpoint(model, ckpt)
    return model.eval(), info
