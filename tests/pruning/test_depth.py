"""Depth pruning: removable residual blocks, removing them, their costs, and the v2 policy format."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torchvision.models import VisionTransformer
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.regnet import BlockParams, RegNet

from prunepilot.errors import PolicyError, PruningError
from prunepilot.hw_models.registry import get_latency_model
from prunepilot.models import build_model
from prunepilot.models._resnet_cifar import BasicBlock
from prunepilot.pruning import (
    POLICY_FORMAT,
    POLICY_FORMAT_V2,
    PruningPolicy,
    PruningSpace,
    apply_policy,
    count_macs_params,
)


def _zoo(spec: str) -> Callable[[], nn.Module]:
    return lambda: build_model(spec, num_classes=10, in_channels=3)


def _vit() -> nn.Module:
    return VisionTransformer(
        image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10
    )


def _convnext() -> nn.Module:
    return ConvNeXt([CNBlockConfig(8, 16, 2), CNBlockConfig(16, None, 2)], layer_scale=0.5, num_classes=10)


def _regnet() -> nn.Module:
    return RegNet(BlockParams.from_init_params(depth=4, w_0=8, w_a=8.0, w_m=2.0, group_width=8), num_classes=10)


RESNET20 = ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"]
MBV2_RES = [f"features.{i}" for i in (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)]
LISTED = {
    "resnet20": (_zoo("resnet20"), 32, RESNET20, "BasicBlock"),
    "tv-resnet18": (
        _zoo("torchvision:resnet18"),
        64,
        ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"],
        "BasicBlock",
    ),
    "tv-mobilenet_v2": (_zoo("torchvision:mobilenet_v2"), 64, MBV2_RES, "InvertedResidual"),
    "zoo-mobilenetv2": (_zoo("mobilenetv2"), 32, MBV2_RES, "InvertedResidual"),
    "vit": (_vit, 32, ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"], "EncoderBlock"),
    "convnext": (_convnext, 32, ["features.1.0", "features.1.1", "features.3.0", "features.3.1"], "CNBlock"),
    "regnet": (_regnet, 32, ["trunk_output.block3.block3-1"], "ResBottleneckBlock"),
}


def _space(factory: Callable[[], nn.Module], size: int) -> tuple[nn.Module, torch.Tensor, PruningSpace]:
    model = factory().eval()
    x = torch.randn(1, 3, size, size)
    return model, x, PruningSpace.build(model, x)


@pytest.mark.parametrize("case", list(LISTED), ids=list(LISTED))
def test_removable_blocks_are_listed_in_forward_order(case: str) -> None:
    factory, size, expected, kind = LISTED[case]
    model, x, space = _space(factory, size)
    assert space.block_names == tuple(expected)
    assert {b.kind for b in space.blocks} == {kind}
    first = space.blocks[0]
    modules = dict(model.named_modules())
    assert set(first.modules) == {n for n in modules if n.startswith(first.name + ".")}
    assert first.params == sum(p.numel() for p in modules[first.name].parameters())
    # the block's MACs are what the model loses without it
    gone = PruningPolicy.uniform(space, 1.0).with_removed_blocks(space, [first.name])
    macs, _ = count_macs_params(apply_policy(model, gone, x, space=space), x)
    assert first.macs == space.base_macs - macs > 0


@pytest.mark.parametrize("spec", ["vgg11s", "simplecnn"])
def test_plain_cnn_has_no_blocks(spec: str) -> None:
    size = 8 if spec == "simplecnn" else 32
    channels = 1 if spec == "simplecnn" else 3
    model = build_model(spec, num_classes=10, in_channels=channels).eval()
    space = PruningSpace.build(model, torch.randn(1, channels, size, size))
    assert space.blocks == ()
    with pytest.raises(PolicyError, match="no removable residual blocks"):
        PruningPolicy.uniform(space, 1.0).with_removed_blocks(space, ["features.0"])


class _Pooled(BasicBlock):
    """An identity-shortcut block (by its class) that halves the feature map: not removable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(super().forward(x), 2)


def test_blocks_must_keep_their_shape_in_the_trace() -> None:
    stem = [nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()]
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)]
    model = nn.Sequential(*stem, _Pooled(16, 16), BasicBlock(16, 16), *head).eval()
    space = PruningSpace.build(model, torch.randn(1, 3, 16, 16))
    assert space.block_names == ("3",)


def test_blocks_need_a_traced_call_and_respect_ignored_layers() -> None:
    model = build_model("resnet20", num_classes=10, in_channels=3).eval()
    model.spare = BasicBlock(16, 16)  # a removable class, never called in forward
    x = torch.randn(1, 3, 32, 32)
    assert "spare" not in PruningSpace.build(model, x).block_names
    space = PruningSpace.build(model, x, ignored_layers=["layer1.1.conv2"])
    assert space.block_names == tuple(n for n in RESNET20 if n != "layer1.1")


APPLIED = ["resnet20", "tv-resnet18", "tv-mobilenet_v2", "vit", "convnext", "regnet"]


@pytest.mark.parametrize("ratio", [1.0, 0.5], ids=["depth-only", "with-width"])
@pytest.mark.parametrize("case", APPLIED, ids=APPLIED)
def test_apply_removes_blocks_and_analytic_costs_match(case: str, ratio: float) -> None:
    factory, size, _, _ = LISTED[case]
    model, x, space = _space(factory, size)
    removed = list(space.block_names[::2])
    width_only = PruningPolicy.uniform(space, ratio)
    policy = width_only.with_removed_blocks(space, removed)
    pruned = apply_policy(model, policy, x, space=space)
    y = pruned(x)
    assert y.shape == (1, 10) and torch.isfinite(y).all()
    modules = dict(pruned.named_modules())
    assert all(isinstance(modules[n], nn.Identity) for n in removed)
    macs, params = count_macs_params(pruned, x)
    assert space.macs(policy.channels, policy.removed_blocks) == macs
    assert space.params(policy.channels, policy.removed_blocks) == params
    assert macs < space.macs(width_only.channels)
    # hardware models see the same layers as in the built model
    layers = space.layers(policy.channels, policy.removed_blocks)
    assert not any(layer.name.startswith(f"{b}.") for layer in layers for b in removed)
    assert len(layers) < len(space.layers(width_only.channels))
    roofline = get_latency_model("roofline")
    predicted = roofline.predict_ms(space, policy.channels, 1, policy.removed_blocks).ms
    assert predicted == pytest.approx(roofline.measure_ms(pruned, x.shape, 1).ms, rel=1e-2)
    assert predicted < roofline.predict_ms(space, width_only.channels, 1).ms
    assert count_macs_params(model, x) == (space.base_macs, space.base_params)  # the input model is untouched


@pytest.mark.parametrize(
    "case,block,zero",
    [
        ("convnext", "features.1.1", ["layer_scale"]),  # x + layer_scale * f(x)
        ("resnet20", "layer1.1", ["bn2.weight", "bn2.bias"]),  # relu(x + bn2(...)), x >= 0 after a ReLU
    ],
    ids=["x+f(x)", "relu(x+f(x))"],
)
def test_identity_is_the_block_with_its_branch_zeroed(case: str, block: str, zero: list[str]) -> None:
    factory, size, _, _ = LISTED[case]
    model, _, space = _space(factory, size)
    x = torch.randn(2, 3, size, size)
    policy = PruningPolicy.uniform(space, 1.0).with_removed_blocks(space, [block])
    removed = apply_policy(model, policy, x, space=space)
    params = dict(model.named_parameters())
    with torch.no_grad():
        assert not torch.allclose(removed(x), model(x), rtol=1e-3, atol=0)  # the block did something
        for name in zero:
            params[f"{block}.{name}"].zero_()
        assert torch.equal(removed(x), model(x))


V1_TEXT = """{
  "format": "prunepilot.policy/v1",
  "signature": "0123456789abcdef",
  "keep_ratios": {
    "conv1": 0.5,
    "fc1": 1.0
  },
  "channels": {
    "conv1": 8,
    "fc1": 32
  },
  "group_channels": {
    "conv1": 16,
    "fc1": 32
  },
  "round_to": 1,
  "importance": "l1",
  "metadata": {
    "seed": 0
  }
}
"""


def test_v1_file_loads_unchanged_and_resaves_byte_identical(tmp_path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(V1_TEXT)
    policy = PruningPolicy.load(path)
    assert policy.removed_blocks == () and policy.format == POLICY_FORMAT
    assert policy.key() == (8, 32)
    assert "removed_blocks" not in policy.model_dump(mode="json")
    assert policy.save(tmp_path / "again.json").read_text() == V1_TEXT


@pytest.fixture(scope="module")
def resnet20() -> tuple[nn.Module, torch.Tensor, PruningSpace]:
    torch.manual_seed(0)
    return _space(_zoo("resnet20"), 32)


def test_v2_file_round_trips(resnet20, tmp_path) -> None:
    model, x, space = resnet20
    width_only = PruningPolicy.uniform(space, 0.5)
    policy = width_only.with_removed_blocks(space, ["layer2.1", "layer1.1", "layer2.1"])
    assert policy.removed_blocks == ("layer1.1", "layer2.1")  # sorted, unique
    assert policy.key() != width_only.key()
    text = policy.save(tmp_path / "p.json").read_text()
    data = json.loads(text)
    assert data["format"] == POLICY_FORMAT_V2 and data["removed_blocks"] == ["layer1.1", "layer2.1"]
    loaded = PruningPolicy.load(tmp_path / "p.json")
    assert loaded == policy and loaded.key() == policy.key()
    assert loaded.save(tmp_path / "q.json").read_text() == text
    with torch.no_grad():
        torch.testing.assert_close(
            apply_policy(model, loaded, x, space=space)(x), apply_policy(model, policy, x, space=space)(x)
        )
    # removing no blocks gives the width-only policy back, written as v1
    back = policy.with_removed_blocks(space, ())
    assert back == width_only and back.to_json() == width_only.to_json()
    assert json.loads(back.to_json())["format"] == POLICY_FORMAT


def test_save_and_load_pruned_with_removed_blocks(resnet20, tmp_path) -> None:
    from prunepilot.pruning.io import load_pruned, save_pruned

    model, x, space = resnet20
    policy = PruningPolicy.uniform(space, 0.5).with_removed_blocks(space, ["layer1.2", "layer3.1"])
    pruned = apply_policy(model, policy, x, space=space).eval()
    save_pruned(tmp_path, pruned, policy, spec="resnet20", num_classes=10, in_channels=3, input_shape=x.shape)
    loaded = load_pruned(tmp_path).eval()
    assert isinstance(loaded.get_submodule("layer3.1"), nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x))


def test_unknown_block_is_refused_naming_it_and_valid_ones(resnet20) -> None:
    model, x, space = resnet20
    policy = PruningPolicy.uniform(space, 1.0)
    with pytest.raises(PolicyError, match=r"'layer2\.0'.*'layer1\.0'"):  # layer2.0 has a projection shortcut
        policy.with_removed_blocks(space, ["layer1.1", "layer2.0"])
    with pytest.raises(PolicyError, match="sequence of block names"):
        policy.with_removed_blocks(space, "layer1.1")
    data = json.loads(policy.with_removed_blocks(space, ["layer1.1"]).to_json())
    data["removed_blocks"] = ["layer9.9"]
    forged = PruningPolicy.from_json(json.dumps(data))  # well-formed: only the model can tell
    with pytest.raises(PolicyError, match=r"unknown block 'layer9\.9'; .*'layer1\.0'"):
        apply_policy(model, forged, x, space=space)
    with pytest.raises(PolicyError, match=r"'layer9\.9'"):
        space.macs(space.full_widths(), ["layer9.9"])


def test_unknown_format_is_refused_naming_both_formats() -> None:
    data = json.loads(V1_TEXT)
    with pytest.raises(PolicyError, match=r"'prunepilot\.policy/v3'.*policy/v1.*policy/v2"):
        PruningPolicy.from_json(json.dumps({**data, "format": "prunepilot.policy/v3"}))
    with pytest.raises(PolicyError, match="lists removed_blocks"):
        PruningPolicy.from_json(json.dumps({**data, "removed_blocks": ["layer1.1"]}))
    v2 = PruningPolicy.from_json(json.dumps({**data, "format": POLICY_FORMAT_V2, "removed_blocks": ["a"]}))
    assert v2.removed_blocks == ("a",) and v2.format == POLICY_FORMAT_V2


class _OwnBlock(nn.Module):
    """A user's own residual block: ``x + f(x)``, unknown to the built-in rules."""

    def __init__(self, ch: int, shortcut: bool = True) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU())
        self.identity = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


class _OwnNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a, self.b = _OwnBlock(8), _OwnBlock(8, shortcut=False)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b(self.a(self.stem(x))))


def test_a_models_own_block_class_is_removable_once_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    from prunepilot.pruning import depth, register_block

    monkeypatch.setattr(depth, "_RULES", dict(depth._RULES))  # the registration ends with the test
    x = torch.randn(1, 3, 8, 8)
    assert PruningSpace.build(_OwnNet().eval(), x).blocks == ()
    register_block(_OwnBlock, lambda m: m.identity)
    space = PruningSpace.build(_OwnNet().eval(), x)
    assert [b.name for b in space.blocks] == ["a"]  # the rule holds for 'a' only
    with pytest.raises(PruningError, match=r"a class or a 'module.QualName' string, got 'OwnBlock'"):
        register_block("OwnBlock")
