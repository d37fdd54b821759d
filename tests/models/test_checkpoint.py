"""Checkpoints: exact round trips, wrapper formats, strict matching, and refusing unsafe pickles."""

from __future__ import annotations

import collections
import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from prunepilot.errors import CheckpointError
from prunepilot.models import CHECKPOINT_FORMAT, build_model, load_checkpoint, load_model, save_checkpoint


def _trained_like(spec: str = "resnet20", **kwargs: int) -> nn.Module:
    """A model whose BN buffers are not the defaults, so a round trip must carry them."""
    torch.manual_seed(0)
    model = build_model(spec, **kwargs)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, kwargs.get("in_channels", 3), 16, 16) * 3 + 1)
    return model.eval()


def test_round_trip_reproduces_outputs_exactly(tmp_path: Path) -> None:
    model = _trained_like("resnet20", num_classes=5, in_channels=1)
    path = save_checkpoint(model, tmp_path / "sub" / "r20.pt", val_acc=0.5, spec="resnet20", torch=torch.__version__)
    torch.manual_seed(123)  # a different random init, overwritten by the checkpoint
    loaded = load_model("resnet20", path, num_classes=5, in_channels=1).eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT
    assert raw["meta"] == {"val_acc": 0.5, "spec": "resnet20", "torch": str(torch.__version__)}
    assert type(raw["meta"]["torch"]) is str  # a str subclass would not load with weights_only


@pytest.mark.parametrize("layout", ["raw", "state_dict", "model", "dataparallel", "compiled"])
def test_accepted_layouts_load(tmp_path: Path, layout: str) -> None:
    model = _trained_like("testing:tiny-convnet")
    state = model.state_dict()
    obj: object = {
        "raw": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state, "optimizer": {"lr": 0.1}},
        "dataparallel": collections.OrderedDict((f"module.{k}", v) for k, v in state.items()),
        "compiled": {f"_orig_mod.{k}": v for k, v in state.items()},
    }[layout]
    torch.save(obj, tmp_path / "ckpt.pt")
    torch.manual_seed(1)
    fresh = build_model("testing:tiny-convnet")
    assert load_checkpoint(fresh, tmp_path / "ckpt.pt") is fresh
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    save_checkpoint(build_model("resnet20"), tmp_path / "r20.pt")
    with pytest.raises(CheckpointError) as info:
        load_model("resnet32", tmp_path / "r20.pt")
    message = str(info.value)
    assert "missing layer1.3.conv1.weight (16, 16, 3, 3)" in message
    assert "and" in message and "more" in message  # more than ten problems are summarised
    assert str(tmp_path / "r20.pt") in message


def test_shape_mismatch_names_key_and_both_shapes(tmp_path: Path) -> None:
    save_checkpoint(build_model("resnet20", num_classes=10), tmp_path / "r20.pt")
    with pytest.raises(CheckpointError, match=r"fc\.weight: checkpoint \(10, 64\) vs model \(5, 64\)"):
        load_model("resnet20", tmp_path / "r20.pt", num_classes=5)


class _Custom:
    def __init__(self) -> None:
        self.weights = torch.ones(2)


@pytest.mark.parametrize("payload", ["module", "custom_object"])
def test_unsafe_pickles_are_refused_with_a_resave_hint(tmp_path: Path, payload: str) -> None:
    obj = build_model("testing:tiny-convnet") if payload == "module" else {"state_dict": _Custom()}
    torch.save(obj, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(build_model("testing:tiny-convnet"), tmp_path / "unsafe.pt")
    message = str(info.value)
    assert "weights_only=True" in message
    assert "torch.save(model.state_dict(), path)" in message
    refused = "TinyConvNet" if payload == "module" else "_Custom"
    assert "it pickles the global '" in message and refused in message
    assert "prunepilot never unpickles" in message and "False" not in message


class _Attack:
    """Pickles as a call of os.system: unpickling it would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_an_attack_pickle_is_refused_naming_the_global_never_advising_weights_only_false(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    torch.save({"state_dict": _Attack(marker)}, tmp_path / "attack.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(build_model("testing:tiny-convnet"), tmp_path / "attack.pt")
    assert not marker.exists()
    message = str(info.value)
    assert re.search(r"it pickles the global '(posix|nt|os)\.system'", message), message
    assert "prunepilot never unpickles" in message
    assert "False" not in message and "trusted source" not in message  # torch's advice is not relayed
    assert info.value.__cause__ is None and info.value.__suppress_context__  # nor chained into the traceback


def test_missing_unreadable_and_non_state_dict_files(tmp_path: Path) -> None:
    model = build_model("testing:tiny-convnet")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(model, tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(model, tmp_path)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(model, tmp_path / "garbage.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta_only.pt")
    with pytest.raises(CheckpointError, match=r"not a state dict.*'epoch'"):
        load_checkpoint(model, tmp_path / "meta_only.pt")


def test_save_rejects_metadata_that_is_not_json(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="'when'"):
        save_checkpoint(build_model("testing:tiny-convnet"), tmp_path / "x.pt", when=object())
    assert not (tmp_path / "x.pt").exists()
