"""Data: a :class:`DataConfig` in, seeded train/val/test/calib loaders out.

``val`` is held out from the dataset's *training* split and is what searches score on; ``test``
is the dataset's own test split, for final reports only; ``calib`` (a subset of ``train``)
recalibrates batch norm after pruning. The data root comes from ``DataConfig.root``, the CLI's
``--data-root`` or the ``PRUNEPILOT_DATA`` environment variable.

Example:
    >>> from prunepilot.data import DataConfig, build_data
    >>> bundle = build_data(DataConfig(name="fashion-mnist", train_subset=5000))
    >>> bundle.num_classes, bundle.input_shape
    (10, (1, 28, 28))
"""

from __future__ import annotations

from prunepilot.data._builtin import DIGITS_TEST_FRACTION, ResizedDataset, clear_cache
from prunepilot.data._splits import DataBundle, build_data, split_indices
from prunepilot.data.config import BUILTIN_DATASETS, DATA_ROOT_ENV, DataConfig

__all__ = [
    "BUILTIN_DATASETS",
    "DATA_ROOT_ENV",
    "DIGITS_TEST_FRACTION",
    "DataBundle",
    "DataConfig",
    "ResizedDataset",
    "build_data",
    "clear_cache",
    "split_indices",
]
