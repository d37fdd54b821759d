"""Spec strings: query kwargs, torchvision names, user import paths and every kind of bad spec."""

from __future__ import annotations

import itertools
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from prunepilot.errors import ModelSpecError
from prunepilot.models import build_model, list_models, parse_spec, register_model

_counter = itertools.count()


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a uniquely named module with the given source to sys.path; return its name."""

    def write(source: str) -> str:
        name = f"pp_user_models_{next(_counter)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    return write


def test_parse_spec_kinds_and_typed_query_values() -> None:
    parsed = parse_spec("torchvision:vit_b_16?image_size=32&dropout=0.1&flag=true&norm=layer")
    assert (parsed.kind, parsed.target) == ("torchvision", "vit_b_16")
    assert parsed.kwargs == {"image_size": 32, "dropout": 0.1, "flag": True, "norm": "layer"}
    assert type(parsed.kwargs["image_size"]) is int and type(parsed.kwargs["flag"]) is bool
    assert parse_spec("pkg.mod:fn").kind == "import"
    assert parse_spec("resnet20").kwargs == {}


def test_zoo_query_kwargs_reach_the_builder() -> None:
    model = build_model("simplecnn?width_mult=0.5", in_channels=1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 64, 128]


def test_torchvision_model_gets_num_classes() -> None:
    model = build_model("torchvision:resnet18", num_classes=5)
    assert model.fc.out_features == 5
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_torchvision_vit_with_image_size_query() -> None:
    model = build_model("torchvision:vit_b_16?image_size=32", num_classes=4).eval()
    assert model.image_size == 32
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def test_torchvision_rejects_other_input_channels() -> None:
    with pytest.raises(ModelSpecError, match=r"torchvision:resnet18.*in_channels=1.*adapt_stem=true"):
        build_model("torchvision:resnet18", in_channels=1)


def test_torchvision_stem_adapted_for_grayscale_28x28() -> None:
    model = build_model("torchvision:mobilenet_v2?adapt_stem=true&stem_stride=1", num_classes=10, in_channels=1)
    stem = model.features[0][0]
    assert (stem.in_channels, stem.stride, stem.out_channels) == (1, (1, 1), 32)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # stride 1 keeps 4x more positions after the stem than torchvision's stride 2
    feats = model.features[0](torch.randn(1, 1, 28, 28))
    assert feats.shape[-2:] == (28, 28)


def test_torchvision_stem_stride_alone_keeps_rgb_input() -> None:
    model = build_model("torchvision:resnet18?stem_stride=1", num_classes=3)
    assert (model.conv1.in_channels, model.conv1.stride) == (3, (1, 1))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("torchvision:resnet18?stem_stride=0", r"stem_stride=0 must be an integer >= 1"),
        ("torchvision:resnet18?stem_stride=two", r"stem_stride='two' must be an integer"),
        ("torchvision:resnet18?adapt_stem=yes", r"adapt_stem='yes' must be true or false"),
    ],
)
def test_torchvision_stem_keys_bad_values(spec: str, match: str) -> None:
    with pytest.raises(ModelSpecError, match=match):
        build_model(spec)


def test_user_builder_gets_only_the_arguments_it_declares(user_module) -> None:
    name = user_module(
        """
        from torch import nn

        def full(num_classes, in_channels, hidden=4):
            layers = [nn.Flatten(), nn.Linear(in_channels * 4, hidden), nn.Linear(hidden, num_classes)]
            return nn.Sequential(*layers)

        def classes_only(num_classes):
            return nn.Linear(3, num_classes)

        def bare():
            return nn.Identity()

        class Factory:
            @staticmethod
            def make(num_classes):
                return nn.Linear(2, num_classes)
        """
    )
    full = build_model(f"{name}:full?hidden=6", num_classes=3, in_channels=2)
    assert full[1].in_features == 8 and full[1].out_features == 6 and full[2].out_features == 3
    assert build_model(f"{name}:classes_only", num_classes=7, in_channels=5).out_features == 7
    assert isinstance(build_model(f"{name}:bare"), nn.Identity)
    assert build_model(f"{name}:Factory.make", num_classes=9).out_features == 9


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("nosuchmodel", "not a zoo model"),
        ("resnt20", "Did you mean 'resnet20'"),
        ("torchvision:nosuchnet", "not a torchvision classification model"),
        ("torchvision:resnet18?weights=DEFAULT", "never downloads"),
        ("pp_definitely_missing_pkg.mod:fn", "cannot import module"),
        ("math:nope", "has no attribute 'nope'"),
        ("math:pi", "not a callable"),
        ("collections:OrderedDict", "not a torch.nn.Module"),
        ("resnet20?bogus=1", "query key 'bogus' is not accepted"),
        ("resnet20?num_classes=3", "cannot be set in the query"),
        ("resnet20?noequals", "not 'key=value'"),
        ("simplecnn?width_mult=1&width_mult=2", "given twice"),
        ("simplecnn?width_mult=-1", "width_mult must be > 0"),
        ("torchvision:vit_b_16?image_size=30", "builder failed"),
    ],
)
def test_bad_specs_raise_model_spec_error_naming_the_spec(spec: str, reason: str) -> None:
    with pytest.raises(ModelSpecError) as info:
        build_model(spec)
    message = str(info.value)
    assert repr(spec) in message
    assert reason in message


def test_unknown_name_lists_zoo_and_accepted_forms() -> None:
    with pytest.raises(ModelSpecError) as info:
        build_model("alexnet")
    message = str(info.value)
    for name in list_models():
        assert repr(name) in message
    assert "torchvision:NAME" in message and "pkg.module:callable" in message


def test_empty_spec_and_broken_user_module(user_module) -> None:
    with pytest.raises(ModelSpecError, match="empty"):
        build_model("  ")
    broken = user_module("raise RuntimeError('boom at import')\n")
    with pytest.raises(ModelSpecError, match=r"boom at import") as info:
        build_model(f"{broken}:fn")
    assert broken in str(info.value)


def test_register_model_rejects_duplicates_and_bad_names() -> None:
    with pytest.raises(ModelSpecError, match="already registered"):
        register_model("resnet20")(lambda num_classes=10, in_channels=3: nn.Identity())
    with pytest.raises(ModelSpecError, match="invalid"):
        register_model("pkg:thing")
