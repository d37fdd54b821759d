"""Zoo models: output shapes on every supported input size, structure, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunepilot.models import build_model, list_models

# (spec, [(in_channels, size), ...]) for every built-in zoo model and the tiny test fixtures.
ZOO_INPUTS = [
    ("resnet20", [(3, 32), (1, 28), (3, 8)]),
    ("resnet32", [(3, 32), (1, 8)]),
    ("resnet56", [(3, 32), (1, 28)]),
    ("mobilenetv2", [(3, 32), (1, 28), (3, 8)]),
    ("vgg11s", [(3, 32), (1, 28), (1, 8)]),
    ("simplecnn", [(1, 8), (1, 28), (3, 32)]),
    ("testing:tiny-convnet", [(1, 8), (3, 32)]),
    ("testing:tiny-residual", [(1, 8), (3, 32)]),
    ("testing:tiny-depthwise", [(1, 8), (3, 32)]),
]


def test_list_models_has_every_zoo_name() -> None:
    names = list_models()
    assert names == sorted(names)
    for spec, _ in ZOO_INPUTS:
        assert spec in names or spec.startswith("testing:")
    # the test fixtures are not production zoo models, under either name
    assert not [name for name in names if name.startswith(("tiny-", "testing:"))]


@pytest.mark.parametrize(("spec", "inputs"), ZOO_INPUTS, ids=[s for s, _ in ZOO_INPUTS])
def test_zoo_forward_gives_logits_per_class(spec: str, inputs: list[tuple[int, int]]) -> None:
    for in_channels, size in inputs:
        model = build_model(spec, num_classes=7, in_channels=in_channels).eval()
        with torch.no_grad():
            out = model(torch.randn(2, in_channels, size, size))
        assert out.shape == (2, 7), (spec, in_channels, size)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("spec", ["resnet20", "mobilenetv2", "vgg11s", "simplecnn", "testing:tiny-convnet"])
def test_init_is_deterministic_under_manual_seed(spec: str) -> None:
    torch.manual_seed(3)
    first = build_model(spec).state_dict()
    torch.manual_seed(3)
    second = build_model(spec).state_dict()
    torch.manual_seed(4)
    third = build_model(spec).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], third[k]) for k in first if first[k].is_floating_point())


@pytest.mark.parametrize(("spec", "depth"), [("resnet20", 20), ("resnet32", 32), ("resnet56", 56)])
def test_resnet_depth_and_option_b_shortcuts(spec: str, depth: int) -> None:
    model = build_model(spec)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    # depth counts the 3x3 convolutions and the linear head, as in He et al.
    assert sum(m.kernel_size == (3, 3) for m in convs.values()) + 1 == depth
    widths = sorted({m.out_channels for m in convs.values()})
    assert widths == [16, 32, 64]
    # Option B: exactly the two stage transitions have 1x1 strided conv shortcuts followed by BN.
    shortcuts = [n for n, m in convs.items() if m.kernel_size == (1, 1)]
    assert shortcuts == ["layer2.0.shortcut.0", "layer3.0.shortcut.0"]
    assert all(convs[n].stride == (2, 2) for n in shortcuts)
    assert isinstance(dict(model.named_modules())["layer2.0.shortcut.1"], nn.BatchNorm2d)


def test_mobilenetv2_small_input_layout() -> None:
    model = build_model("mobilenetv2").eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].stride == (1, 1)  # stride-1 stem for small inputs
    depthwise = [m for m in convs if m.groups > 1]
    assert len(depthwise) == 17 and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert sum(getattr(m, "use_residual", False) for m in model.modules()) == 10
    with torch.no_grad():
        assert model.features(torch.randn(1, 3, 32, 32)).shape == (1, 1280, 4, 4)
        assert model.features(torch.randn(1, 3, 28, 28)).shape == (1, 1280, 4, 4)


def test_vgg11s_has_eight_bn_convs_and_gap_head() -> None:
    model = build_model("vgg11s").eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 128, 256, 256, 256, 256]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 8
    with torch.no_grad():
        assert model(torch.randn(1, 3, 40, 40)).shape == (1, 10)  # any size >= 8


def test_simplecnn_keeps_full_resolution_until_global_pool() -> None:
    model = build_model("simplecnn", in_channels=1).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 128, 256]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in convs)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in model.modules())
    with torch.no_grad():
        assert model.features(torch.randn(2, 1, 8, 8)).shape == (2, 256, 8, 8)


def test_tiny_models_have_the_couplings_they_promise() -> None:
    residual = build_model("testing:tiny-residual").eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        stem = residual.stem(x)
        # the add couples stem.0 and block.3: zeroing the block leaves relu(stem) in the sum
        for p in residual.block.parameters():
            p.zero_()
        assert torch.equal(residual.relu(stem + residual.block(stem)), torch.relu(stem))
    depthwise = build_model("testing:tiny-depthwise")
    dw = dict(depthwise.named_modules())["dw.0"]
    assert isinstance(dw, nn.Conv2d) and dw.groups == dw.in_channels == dw.out_channels == 8
