"""Loading datasets into memory: digits, Fashion-MNIST, CIFAR-10 and user functions.

Built-in datasets are read once per process into normalised float32 tensors (``N x C x H x W``)
and kept in an LRU cache, so repeated ``build_data`` calls (one per search trial) neither touch
the files again nor decode images item by item.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from prunepilot.data.config import DATA_ROOT_ENV, DataConfig
from prunepilot.errors import DataError

_FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_FASHION_MEAN, _FASHION_STD = 0.2860, 0.3530
_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)
DIGITS_TEST_FRACTION = 0.2
"""Share of scikit-learn's 1797 digits held out, stratified and with a fixed seed, as test split."""
_DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class Source:
    """A dataset's own train and test splits, before prunepilot's validation hold-out.

    Attributes:
        train: The training split (a ``TensorDataset`` for built-in datasets).
        test: The test split.
        num_classes: Number of classes.
    """

    train: Dataset[Any]
    test: Dataset[Any]
    num_classes: int


def load_source(cfg: DataConfig) -> Source:
    """Load the dataset named by ``cfg`` (cached per process for identical loading settings).

    Raises:
        ConfigError: If the dataset needs a data root and none is configured.
        DataError: If the files are missing or a user function misbehaves.
    """
    root = cfg.resolved_root()
    root_key = str(root) if root is not None else None
    seed_key = cfg.seed if cfg.name not in ("digits", "fashion-mnist", "cifar10") else None
    return _load_cached(cfg.name, root_key, cfg.download, cfg.resize, seed_key)


@functools.lru_cache(maxsize=2)
def _load_cached(name: str, root: str | None, download: bool, resize: int | None, seed: int | None) -> Source:
    if name == "digits":
        return _resize_source(_load_digits(), resize)
    if name == "fashion-mnist":
        return _resize_source(_load_fashion_mnist(Path(str(root)), download), resize)
    if name == "cifar10":
        return _resize_source(_load_cifar10(Path(str(root)), download), resize)
    return _load_user(name, root, download, seed, resize)


def clear_cache() -> None:
    """Forget every dataset loaded in this process (frees their memory)."""
    _load_cached.cache_clear()


def _load_digits() -> Source:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        list(range(len(labels))),
        test_size=DIGITS_TEST_FRACTION,
        random_state=_DIGITS_SPLIT_SEED,
        stratify=digits.target,
    )
    tr, te = torch.tensor(train_idx), torch.tensor(test_idx)
    return Source(TensorDataset(images[tr], labels[tr]), TensorDataset(images[te], labels[te]), 10)


def _load_fashion_mnist(root: Path, download: bool) -> Source:
    from torchvision.datasets import FashionMNIST

    raw = root / "FashionMNIST" / "raw"
    missing = [f for f in _FASHION_FILES if not (raw / f).is_file()]
    if missing and not download:
        raise DataError(
            f"Fashion-MNIST not found under data root {str(root)!r}: missing {missing} in "
            f"{str(raw)!r}. The four IDX files ({', '.join(_FASHION_FILES)}) are expected in "
            f"torchvision's layout <root>/FashionMNIST/raw/. Point 'root', {DATA_ROOT_ENV} or "
            "--data-root at the folder that contains FashionMNIST/, or set 'download: true'."
        )
    splits = []
    for train in (True, False):
        try:
            ds = FashionMNIST(str(root), train=train, download=download)
        except Exception as exc:  # torchvision raises RuntimeError for missing or corrupt files
            raise DataError(f"cannot load Fashion-MNIST from {str(raw)!r}: {exc}") from exc
        images = (ds.data.float().unsqueeze(1) / 255.0 - _FASHION_MEAN) / _FASHION_STD
        splits.append(TensorDataset(images.contiguous(), ds.targets.long()))
    return Source(splits[0], splits[1], 10)


def _load_cifar10(root: Path, download: bool) -> Source:
    from torchvision.datasets import CIFAR10

    folder = root / "cifar-10-batches-py"
    if not folder.is_dir() and not download:
        raise DataError(
            f"CIFAR-10 not found under data root {str(root)!r}: {str(folder)!r} does not exist. "
            "The python-version batches (data_batch_1..5, test_batch, batches.meta) are expected "
            f"in torchvision's layout <root>/cifar-10-batches-py/. Point 'root', {DATA_ROOT_ENV} "
            "or --data-root at the folder that contains cifar-10-batches-py/, or set "
            "'download: true'."
        )
    mean = torch.tensor(_CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_CIFAR_STD).view(1, 3, 1, 1)
    splits = []
    for train in (True, False):
        try:
            ds = CIFAR10(str(root), train=train, download=download)
        except Exception as exc:
            raise DataError(f"cannot load CIFAR-10 from {str(folder)!r}: {exc}") from exc
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float() / 255.0
        splits.append(TensorDataset(((images - mean) / std).contiguous(), torch.tensor(ds.targets)))
    return Source(splits[0], splits[1], 10)


def _resize_tensors(ds: TensorDataset, size: int) -> TensorDataset:
    images, labels = ds.tensors
    resized = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return TensorDataset(resized, labels)


def _resize_source(source: Source, resize: int | None) -> Source:
    if resize is None:
        return source
    assert isinstance(source.train, TensorDataset) and isinstance(source.test, TensorDataset)
    return Source(_resize_tensors(source.train, resize), _resize_tensors(source.test, resize), source.num_classes)


class ResizedDataset(Dataset[tuple[torch.Tensor, Any]]):
    """Wraps a ``(image, label)`` dataset and resizes each image (C x H x W) bilinearly.

    Args:
        dataset: The dataset to wrap.
        size: Output height and width.
    """

    def __init__(self, dataset: Dataset[Any], size: int) -> None:
        self.dataset = dataset
        self.size = size

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        image, label = self.dataset[index]
        image = F.interpolate(image.unsqueeze(0), size=(self.size, self.size), mode="bilinear")
        return image.squeeze(0), label


def _load_user(name: str, root: str | None, download: bool, seed: int | None, resize: int | None) -> Source:
    module_name, _, attr_path = name.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise DataError(
            f"data name {name!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            raise DataError(f"data name {name!r}: {getattr(obj, '__name__', obj)!r} has no attribute {attr!r}")
        obj = getattr(obj, attr)
    if not callable(obj):
        raise DataError(f"data name {name!r}: {attr_path!r} is a {type(obj).__name__}, not a function")
    available = {"root": Path(root) if root is not None else None, "download": download, "seed": seed}
    try:
        params = dict(inspect.signature(obj).parameters)
    except (TypeError, ValueError):  # no signature (some builtins): pass nothing
        params = {}
    result = obj(**{k: v for k, v in available.items() if k in params})
    if not (isinstance(result, tuple) and len(result) == 3):
        raise DataError(
            f"data name {name!r} returned {type(result).__name__}; expected a tuple "
            "(train_dataset, test_dataset, num_classes)"
        )
    train, test, num_classes = result
    for split, ds in (("train", train), ("test", test)):
        if not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")) or len(ds) == 0:
            raise DataError(
                f"data name {name!r}: the {split} dataset ({type(ds).__name__}) must be a non-empty "
                "map-style dataset (with __len__ and __getitem__)"
            )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise DataError(f"data name {name!r}: num_classes must be an int >= 2, got {num_classes!r}")
    if resize is not None:
        train, test = ResizedDataset(train, resize), ResizedDataset(test, resize)
    return Source(train, test, num_classes)
