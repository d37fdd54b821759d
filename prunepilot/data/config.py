"""``DataConfig``: which dataset, where it lives, and how it is split and batched.

Example:
    >>> from prunepilot.data import DataConfig, build_data
    >>> bundle = build_data(DataConfig(name="digits", batch_size=64))
    >>> bundle.input_shape
    (1, 8, 8)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prunepilot.errors import ConfigError, one_of

DATA_ROOT_ENV = "PRUNEPILOT_DATA"
"""Environment variable naming the data root when ``DataConfig.root`` is not set."""

BUILTIN_DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "cifar10")
"""Dataset names built into prunepilot; anything else must be an import path."""

DATASETS_NEEDING_ROOT: tuple[str, ...] = ("fashion-mnist", "cifar10")
"""Built-in datasets read from files under the data root (``digits`` ships with scikit-learn)."""

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class DataConfig(BaseModel):
    """Dataset, location, splits and loaders; hashable, so it keys the in-process data cache."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    name: str = "digits"
    """``digits`` (scikit-learn's bundled 8x8 digits), ``fashion-mnist``, ``cifar10``, or an
    import path ``pkg.module:fn`` to a function returning ``(train_dataset, test_dataset,
    num_classes)``; it is called with ``root``, ``download`` and ``seed`` if it declares them."""

    root: Path | None = None
    """Folder holding the datasets in torchvision's layout (``<root>/FashionMNIST/raw/...``,
    ``<root>/cifar-10-batches-py/``). None falls back to the ``PRUNEPILOT_DATA`` environment
    variable (the CLI flag is ``--data-root``); required for fashion-mnist and cifar10."""

    download: bool = False
    """Let torchvision download a missing dataset into ``root`` (needs internet)."""

    batch_size: int = Field(default=128, gt=0)
    """Batch size of the training and calibration loaders."""

    eval_batch_size: int = Field(default=512, gt=0)
    """Batch size of the validation and test loaders."""

    val_size: int | float = 0.1
    """Validation images held out from the dataset's *training* split: a count (int >= 1) or a
    fraction in (0, 1). Search scores use this split; the test split is for final reports."""

    calib_size: int = Field(default=512, gt=0)
    """Images for batch-norm recalibration, drawn from the training part (never from val)."""

    train_subset: int | None = Field(default=None, gt=0)
    """Cap on training images after the validation hold-out (None: all), for fast runs."""

    val_subset: int | None = Field(default=None, gt=0)
    """Cap on validation images (None: all of ``val_size``)."""

    test_subset: int | None = Field(default=None, gt=0)
    """Cap on test images, a seeded random subset (None: the whole test split)."""

    resize: int | None = Field(default=None, gt=0)
    """Resize images to ``resize x resize`` (bilinear) when loading; None keeps the native size."""

    seed: int = 0
    """Seed of the validation hold-out, the subsets and the training loader's shuffling."""

    num_workers: int = Field(default=0, ge=0)
    """DataLoader worker processes (0 loads in the main process; data are in-memory tensors)."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if value in BUILTIN_DATASETS or _IMPORT_PATH.match(value):
            return value
        raise ConfigError(
            f"data name {value!r} is not a dataset: use {one_of(BUILTIN_DATASETS)}, or an import "
            "path 'pkg.module:fn' to a function returning (train_dataset, test_dataset, num_classes)"
        )

    @field_validator("val_size", mode="before")
    @classmethod
    def _reject_bool_val_size(cls, value: object) -> object:
        if isinstance(value, bool):  # pydantic would turn True into the count 1
            raise ConfigError(f"val_size {value!r} must be a count (int >= 1) or a fraction in (0, 1)")
        return value

    @field_validator("val_size")
    @classmethod
    def _check_val_size(cls, value: int | float) -> int | float:
        if isinstance(value, int) and value >= 1:
            return value
        if isinstance(value, float) and 0.0 < value < 1.0:
            return value
        raise ConfigError(f"val_size {value!r} must be a count (int >= 1) or a fraction in (0, 1)")

    def resolved_root(self) -> Path | None:
        """The data root: ``root``, else ``$PRUNEPILOT_DATA``, else None.

        Raises:
            ConfigError: If the dataset needs files and neither is set.
        """
        if self.root is not None:
            return self.root.expanduser()
        env = os.environ.get(DATA_ROOT_ENV, "").strip()
        if env:
            return Path(env).expanduser()
        if self.name in DATASETS_NEEDING_ROOT:
            raise ConfigError(
                f"dataset {self.name!r} needs a data root: set the data config field 'root', the "
                f"environment variable {DATA_ROOT_ENV}, or the CLI flag --data-root to the folder "
                "that holds the dataset (add 'download: true' to fetch it there)"
            )
        return None
