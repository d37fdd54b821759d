"""build_data: sizes, seeded disjoint splits, caching, real Fashion-MNIST, user datasets, errors."""

from __future__ import annotations

import itertools
import os
import sys
import textwrap
from pathlib import Path

import pytest
import sklearn.datasets
import torch

from prunepilot.data import DATA_ROOT_ENV, DataConfig, build_data, clear_cache, split_indices
from prunepilot.errors import ConfigError, DataError

_counter = itertools.count()


def _tensors(loader) -> tuple[torch.Tensor, torch.Tensor]:
    return loader.dataset.tensors  # built-in datasets are TensorDatasets


def test_digits_bundle_shapes_sizes_and_range() -> None:
    bundle = build_data(DataConfig(name="digits"))
    assert bundle.num_classes == 10 and bundle.input_shape == (1, 8, 8) and bundle.name == "digits"
    assert bundle.num_test == 360  # 20% of scikit-learn's 1797 digits
    assert bundle.num_train + bundle.num_val == 1797 - 360
    assert bundle.num_val == round(0.1 * 1437) and bundle.num_calib == 512
    x, y = next(iter(bundle.train))
    assert x.dtype == torch.float32 and x.shape == (128, 1, 8, 8) and y.dtype == torch.long
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert bundle.example_inputs(2).shape == (2, 1, 8, 8)
    assert set(_tensors(bundle.test)[1].tolist()) == set(range(10))


def test_split_indices_are_seeded_disjoint_and_complete() -> None:
    train, val = split_indices(1000, 0.2, seed=3)
    again_train, again_val = split_indices(1000, 0.2, seed=3)
    other_train, other_val = split_indices(1000, 0.2, seed=4)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert not torch.equal(val, other_val)
    assert len(val) == 200 and set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    assert len(split_indices(1000, 37, seed=0)[1]) == 37
    with pytest.raises(DataError, match="leaving none"):
        split_indices(10, 10, seed=0)


def test_splits_are_deterministic_and_calib_comes_from_train() -> None:
    a = build_data(DataConfig(seed=7, calib_size=100))
    b = build_data(DataConfig(seed=7, calib_size=100))
    c = build_data(DataConfig(seed=8, calib_size=100))
    for split in ("train", "val", "calib", "test"):
        assert torch.equal(_tensors(getattr(a, split))[0], _tensors(getattr(b, split))[0]), split
    assert not torch.equal(_tensors(a.val)[0], _tensors(c.val)[0])
    assert torch.equal(_tensors(a.test)[0], _tensors(c.test)[0])  # the test split ignores the seed
    assert torch.equal(_tensors(a.calib)[0], _tensors(a.train)[0][:100])
    # same seed, same shuffled batches
    assert torch.equal(next(iter(a.train))[1], next(iter(b.train))[1])
    assert not torch.equal(next(iter(a.train))[1], _tensors(a.train)[1][:128])


def test_train_and_val_do_not_overlap() -> None:
    # The bundled digits contain a few exact duplicate images; compare the split's source indices
    # through a dataset whose images are unique by construction.
    bundle = build_data(DataConfig(name="prunepilot.models.testing:known_answer_dataset", val_size=300))
    train = {tuple(t.flatten().tolist()) for t in _tensors(bundle.train)[0]}
    val = {tuple(t.flatten().tolist()) for t in _tensors(bundle.val)[0]}
    assert len(val) == 300 and train.isdisjoint(val)


def test_subsets_cap_each_split() -> None:
    bundle = build_data(
        DataConfig(train_subset=100, val_subset=20, test_subset=30, calib_size=1000, batch_size=32, val_size=50)
    )
    assert (bundle.num_train, bundle.num_val, bundle.num_test, bundle.num_calib) == (100, 20, 30, 100)
    assert len(bundle.train) == 3  # 100 images in batches of 32, the last partial batch dropped
    full = build_data(DataConfig(val_size=50))
    assert torch.equal(_tensors(full.val)[0][:20], _tensors(bundle.val)[0])  # the cap keeps a prefix


def test_resize_changes_the_input_shape() -> None:
    bundle = build_data(DataConfig(resize=16, train_subset=64))
    assert bundle.input_shape == (1, 16, 16)
    assert next(iter(bundle.val))[0].shape[1:] == (1, 16, 16)


def test_files_are_loaded_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = sklearn.datasets.load_digits

    def counting_load_digits(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(sklearn.datasets, "load_digits", counting_load_digits)
    clear_cache()
    build_data(DataConfig(seed=1))
    build_data(DataConfig(seed=2, batch_size=16, train_subset=50))
    assert len(calls) == 1
    clear_cache()


@pytest.mark.skipif(DATA_ROOT_ENV not in os.environ, reason=f"{DATA_ROOT_ENV} is not set: no Fashion-MNIST")
def test_fashion_mnist_from_the_data_root() -> None:
    cfg = DataConfig(name="fashion-mnist", root=Path(os.environ[DATA_ROOT_ENV]), train_subset=1000, val_subset=500)
    bundle = build_data(cfg)
    assert bundle.num_classes == 10 and bundle.input_shape == (1, 28, 28)
    assert (bundle.num_train, bundle.num_val, bundle.num_test) == (1000, 500, 10000)
    x = _tensors(bundle.train)[0]
    assert x.dtype == torch.float32 and abs(float(x.mean())) < 0.1 and 0.9 < float(x.std()) < 1.1
    assert set(_tensors(bundle.test)[1].tolist()) == set(range(10))


@pytest.mark.parametrize(
    ("name", "expected"), [("fashion-mnist", "FashionMNIST/raw"), ("cifar10", "cifar-10-batches-py")]
)
def test_missing_dataset_folder_says_where_files_go(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(DataError) as info:
        build_data(DataConfig(name=name, root=tmp_path))
    message = str(info.value)
    assert str(tmp_path) in message and expected in message and "download: true" in message


def test_missing_root_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    with pytest.raises(ConfigError, match="--data-root"):
        build_data(DataConfig(name="fashion-mnist"))


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def write(source: str) -> str:
        name = f"pp_user_data_{next(_counter)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    return write


def test_user_dataset_gets_seed_and_root_and_can_be_resized(user_module, tmp_path: Path) -> None:
    name = user_module(
        """
        import torch
        from torch.utils.data import Dataset

        class Images(Dataset):
            def __init__(self, n, seed):
                g = torch.Generator().manual_seed(seed)
                self.x = torch.rand(n, 3, 12, 12, generator=g)
                self.y = torch.arange(n) % 3
            def __len__(self):
                return len(self.y)
            def __getitem__(self, i):
                return self.x[i], int(self.y[i])

        SEEN = []

        def load(root, seed):
            SEEN.append((root, seed))
            return Images(60, seed), Images(20, seed + 100), 3
        """
    )
    bundle = build_data(DataConfig(name=f"{name}:load", root=tmp_path, seed=4, val_size=10, resize=8))
    assert sys.modules[name].SEEN == [(tmp_path, 4)]
    assert (bundle.num_classes, bundle.input_shape) == (3, (3, 8, 8))
    assert (bundle.num_train, bundle.num_val, bundle.num_test) == (50, 10, 20)
    x, y = next(iter(bundle.val))
    assert x.shape == (10, 3, 8, 8) and y.dtype == torch.long


def test_known_answer_dataset_as_user_data() -> None:
    bundle = build_data(DataConfig(name="prunepilot.models.testing:known_answer_dataset"))
    assert (bundle.num_classes, bundle.input_shape, bundle.num_test) == (4, (1, 8, 8), 1024)


@pytest.mark.parametrize(
    ("source", "attr", "reason"),
    [
        ("X = 1\n", "missing", "has no attribute 'missing'"),
        ("X = 1\n", "X", "not a function"),
        ("def f():\n    return [1, 2]\n", "f", "expected a tuple"),
        ("def f():\n    return [], [1], 3\n", "f", "non-empty map-style dataset"),
        ("def f():\n    return [1], [1], 1\n", "f", "num_classes must be an int >= 2"),
        ("import torch\ndef f():\n    d = [(torch.zeros(8), 0)] * 4\n    return d, d, 2\n", "f", "C x H x W"),
        ("raise ImportError('no such thing')\n", "f", "cannot import module"),
    ],
)
def test_bad_user_datasets_raise_data_error(user_module, source: str, attr: str, reason: str) -> None:
    name = user_module(source)
    with pytest.raises(DataError) as info:
        build_data(DataConfig(name=f"{name}:{attr}"))
    assert reason in str(info.value) and name in str(info.value)
