"""Base models trained once and cached: :func:`train_base_model` and its key, :func:`base_model_key`.

A base model is identified by its spec, its data config (without machine-local fields) and its
train config; training the same triple again loads the cached weights instead.

Example:
    >>> from prunepilot.data import DataConfig
    >>> from prunepilot.training import TrainConfig, train_base_model
    >>> model, info = train_base_model("simplecnn", DataConfig(name="digits"), TrainConfig(epochs=5),
    ...                                ".cache/base_models")
    >>> info["cached"]  # doctest: +SKIP
    False
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

import prunepilot
from prunepilot.data import DataConfig, build_data
from prunepilot.models import build_model, load_checkpoint, save_checkpoint
from prunepilot.training.trainer import TrainConfig, evaluate_accuracy, fit

_CACHE_FORMAT = 1  # bump when the cache layout or the training loop changes results
_DATA_FIELDS_NOT_IN_KEY = ("root", "download", "num_workers", "eval_batch_size")


def _versions() -> dict[str, str | None]:
    """Versions to record with every result (torch-pruning is read from its metadata only)."""
    try:
        tp_version: str | None = importlib.metadata.version("torch-pruning")
    except importlib.metadata.PackageNotFoundError:
        tp_version = None
    return {
        "prunepilot": prunepilot.__version__,
        "torch": str(torch.__version__),
        "torch-pruning": tp_version,
    }


def base_model_key(spec: str, data_cfg: DataConfig, train_cfg: TrainConfig) -> str:
    """Hash identifying a trained base model: spec, data config (without machine-local fields:
    root, download, num_workers, eval_batch_size) and train config."""
    payload = {
        "format": _CACHE_FORMAT,
        "spec": spec,
        "data": data_cfg.model_dump(mode="json", exclude=set(_DATA_FIELDS_NOT_IN_KEY)),
        "train": train_cfg.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def train_base_model(
    spec: str,
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    cache_dir: str | os.PathLike[str],
    *,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a base model once, or load it from ``cache_dir`` if it was trained before.

    The cache holds ``<slug>-<key>.pt`` (weights, via :func:`save_checkpoint`) and
    ``<slug>-<key>.json`` (the info below); the key is :func:`base_model_key`. The JSON is
    written last, so an interrupted run is retrained, not half-loaded.

    Args:
        spec: Model spec (see :func:`prunepilot.models.build_model`).
        data_cfg: Data to train on (classes and input channels come from it).
        train_cfg: How to train; its seed also seeds the model's initialisation.
        cache_dir: Folder of the cache (created if missing).
        progress: Show a progress bar while training.

    Returns:
        ``(model, info)``: the model in eval mode, and ``info`` with ``key``, ``spec``,
        ``num_classes``, ``input_shape``, ``val_acc``, ``test_acc``, ``history``, ``data``,
        ``train``, ``versions``, ``checkpoint`` and ``cached`` (True when loaded from the cache).
    """
    key = base_model_key(spec, data_cfg, train_cfg)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)[:60]
    folder = Path(cache_dir)
    ckpt_path, info_path = folder / f"{slug}-{key}.pt", folder / f"{slug}-{key}.json"
    if info_path.is_file() and ckpt_path.is_file():
        cached: dict[str, Any] = json.loads(info_path.read_text())
        model = build_model(spec, num_classes=cached["num_classes"], in_channels=cached["input_shape"][0])
        load_checkpoint(model, ckpt_path)
        return model.eval(), {**cached, "cached": True}

    data = build_data(data_cfg)
    torch.manual_seed(train_cfg.seed)
    model = build_model(spec, num_classes=data.num_classes, in_channels=data.input_shape[0])
    history = fit(model, data.train, train_cfg, val_loader=None, progress=progress)
    info: dict[str, Any] = {
        "key": key,
        "spec": spec,
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "val_acc": evaluate_accuracy(model, data.val),
        "test_acc": evaluate_accuracy(model, data.test),
        "history": history,
        "data": data_cfg.model_dump(mode="json"),
        "train": train_cfg.model_dump(mode="json"),
        "versions": _versions(),
        "checkpoint": str(ckpt_path),
    }
    save_checkpoint(model, ckpt_path, **info)
    tmp = info_path.with_name(f".{info_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, info_path)
    return model.eval(), {**info, "cached": False}
