"""The benchmark bases load only with the checksum their JSON records."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from prunepilot.errors import CheckpointError
from prunepilot.models import build_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bases() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_bases_load", ROOT / "bench" / "bases" / "load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _write_base(bases: ModuleType, folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build_model("resnet20", num_classes=10, in_channels=1)
    ckpt = folder / "resnet20.pt"
    save_checkpoint(model, ckpt)
    record = {
        "name": "resnet20",
        "spec": "resnet20",
        "num_classes": 10,
        "input_shape": [1, 28, 28],
        "checkpoint": ckpt.name,
        "sha256": bases.file_sha256(ckpt),
    }
    (folder / "resnet20.json").write_text(json.dumps(record))
    return ckpt


def test_base_loads_when_sha256_matches(bases: ModuleType, tmp_path: Path) -> None:
    ckpt = _write_base(bases, tmp_path)
    model, info = bases.load_base("resnet20", tmp_path)
    saved = torch.load(ckpt, weights_only=True)
    state = saved.get("state_dict", saved)
    first = next(iter(model.state_dict()))
    assert torch.equal(model.state_dict()[first], state[first])
    assert info["sha256"] == bases.file_sha256(ckpt)
    assert not model.training


def test_base_whose_sha256_differs_is_refused(bases: ModuleType, tmp_path: Path) -> None:
    ckpt = _write_base(bases, tmp_path)
    recorded = json.loads((tmp_path / "resnet20.json").read_text())["sha256"]
    torch.manual_seed(1)  # other weights, same architecture: loadable, but not the recorded ones
    save_checkpoint(build_model("resnet20", num_classes=10, in_channels=1), ckpt)
    with pytest.raises(CheckpointError, match="sha256") as err:
        bases.load_base("resnet20", tmp_path)
    assert recorded in str(err.value) and "bench/bases/train.py" in str(err.value)


def test_missing_and_unknown_bases_name_the_way_out(bases: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="train.py --only resnet20"):
        bases.load_base("resnet20", tmp_path)
    with pytest.raises(CheckpointError, match="mobilenet_v2"):
        bases.load_base("resnet56", tmp_path)


def test_committed_bases_match_their_checksums(bases: ModuleType) -> None:
    trained = [name for name in bases.BASES if (bases.BASES_DIR / f"{name}.json").is_file()]
    assert "resnet20" in trained  # committed with its recipe (bench/bases/train.py)
    for name in trained:
        model, info = bases.load_base(name)
        assert info["test_acc"] >= 0.92, f"{name}: the bases are trained to >= 92% test"
        assert sum(p.numel() for p in model.parameters()) > 0
