"""Seeded splits and loaders: from a dataset's own train/test splits to a :class:`DataBundle`.

The dataset's training split is permuted with ``DataConfig.seed``; the first ``val_size``
images become ``val`` and the rest ``train`` (then capped by ``train_subset``); ``calib`` is the
first ``calib_size`` images of ``train``. So ``train`` and ``val`` are disjoint, ``calib`` is a
subset of ``train``, and the same config always yields the same indices. ``test`` is the
dataset's own test split (optionally a fixed-seed subset), used only for final reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from prunepilot.data._builtin import load_source
from prunepilot.data.config import DataConfig
from prunepilot.errors import DataError

_TEST_SUBSET_SEED = 0


@dataclass(frozen=True)
class DataBundle:
    """Loaders and facts about one dataset, as built by :func:`build_data`.

    Attributes:
        train: Shuffled (seeded) training loader, ``batch_size``; drops a last partial batch
            when there is more than one batch.
        val: Validation loader (held out from the training split), ``eval_batch_size``.
        test: The dataset's test split, ``eval_batch_size``; for final reports only.
        calib: Batch-norm calibration loader (a subset of ``train``), ``batch_size``, in order.
        num_classes: Number of classes.
        input_shape: Shape of one input, ``(C, H, W)``.
        name: The dataset name from the config.
        num_train: Training images.
        num_val: Validation images.
        num_test: Test images.
        num_calib: Calibration images.
    """

    train: DataLoader[Any]
    val: DataLoader[Any]
    test: DataLoader[Any]
    calib: DataLoader[Any]
    num_classes: int
    input_shape: tuple[int, int, int]
    name: str
    num_train: int
    num_val: int
    num_test: int
    num_calib: int

    def example_inputs(self, batch: int = 1) -> torch.Tensor:
        """Zeros of shape ``(batch, C, H, W)``, e.g. for tracing a model's graph."""
        return torch.zeros(batch, *self.input_shape)


def split_indices(n: int, val_size: int | float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into seeded, disjoint ``(train, val)`` index tensors.

    Args:
        n: Size of the dataset's training split.
        val_size: Validation count (int >= 1) or fraction in (0, 1); a fraction keeps >= 1 image.
        seed: Seed of the permutation.

    Returns:
        ``(train_indices, val_indices)``, each in permuted order.

    Raises:
        DataError: If the hold-out would leave no training images.
    """
    n_val = val_size if isinstance(val_size, int) else max(1, round(val_size * n))
    if n_val >= n:
        raise DataError(
            f"val_size {val_size!r} holds out {n_val} of {n} training images, leaving none to "
            "train on; use a smaller count or a fraction in (0, 1)"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]


def _select(ds: Dataset[Any], indices: torch.Tensor) -> Dataset[Any]:
    """Index a dataset: a new ``TensorDataset`` (fast batching) or else a ``Subset``."""
    if isinstance(ds, TensorDataset):
        return TensorDataset(*(t[indices] for t in ds.tensors))
    return Subset(ds, indices.tolist())


def _input_shape(ds: Dataset[Any], name: str) -> tuple[int, int, int]:
    sample = ds[0]
    image = sample[0] if isinstance(sample, (tuple, list)) else None
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise DataError(
            f"dataset {name!r}: samples must be (image, label) with a C x H x W float tensor image; got {got}"
        )
    c, h, w = image.shape
    return int(c), int(h), int(w)


def build_data(cfg: DataConfig) -> DataBundle:
    """Load a dataset (cached per process) and build seeded train/val/test/calib loaders.

    Args:
        cfg: The data configuration.

    Returns:
        The loaders, class count and input shape.

    Raises:
        ConfigError: If the dataset needs a data root and none is configured.
        DataError: If the dataset is missing, malformed, or too small for the requested split.
    """
    source = load_source(cfg)
    n_full = len(source.train)  # type: ignore[arg-type]
    train_idx, val_idx = split_indices(n_full, cfg.val_size, cfg.seed)
    if cfg.train_subset is not None:
        train_idx = train_idx[: cfg.train_subset]
    if cfg.val_subset is not None:
        val_idx = val_idx[: cfg.val_subset]
    calib_idx = train_idx[: cfg.calib_size]
    n_test = len(source.test)  # type: ignore[arg-type]
    test_idx = torch.arange(n_test)
    if cfg.test_subset is not None and cfg.test_subset < n_test:
        perm = torch.randperm(n_test, generator=torch.Generator().manual_seed(_TEST_SUBSET_SEED))
        test_idx = perm[: cfg.test_subset]

    train_ds = _select(source.train, train_idx)
    loader_kw: dict[str, Any] = {"num_workers": cfg.num_workers}
    train = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        drop_last=len(train_idx) > cfg.batch_size,
        **loader_kw,
    )
    val = DataLoader(_select(source.train, val_idx), batch_size=cfg.eval_batch_size, **loader_kw)
    test = DataLoader(_select(source.test, test_idx), batch_size=cfg.eval_batch_size, **loader_kw)
    calib = DataLoader(_select(source.train, calib_idx), batch_size=cfg.batch_size, **loader_kw)
    return DataBundle(
        train=train,
        val=val,
        test=test,
        calib=calib,
        num_classes=source.num_classes,
        input_shape=_input_shape(train_ds, cfg.name),
        name=cfg.name,
        num_train=len(train_idx),
        num_val=len(val_idx),
        num_test=len(test_idx),
        num_calib=len(calib_idx),
    )
