"""Each model pattern of torchvision's classifiers, on a small hand-built module, pruned end to end.

Where it can, a test makes the channels the policy will drop *dead* (all their weights zero), so
that pruning must not change the output at all: that checks the indices Torch-Pruning moved
through shuffles, concatenations, excitations and grouped convolutions, not only the shapes.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torchvision.models.swin_transformer import (
    PatchMerging,
    PatchMergingV2,
    SwinTransformerBlock,
    SwinTransformerBlockV2,
)
from torchvision.ops import SqueezeExcitation

from prunepilot.errors import GraphAnalysisError
from prunepilot.pruning import Limits, PruningPolicy, PruningSpace, adapter, apply_policy, count_macs_params, patterns
from prunepilot.pruning.guard import locate_in


def conv_bn(cin: int, cout: int, k: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


def kill(layers: list[tuple[nn.Module, str]], idxs: list[int]) -> None:
    """Zero channels ``idxs`` of every (layer, side): conv/linear rows or columns, BN scale and shift."""
    with torch.no_grad():
        for layer, side in layers:
            if isinstance(layer, nn.BatchNorm2d):
                layer.weight[idxs] = 0
                layer.bias[idxs] = 0
            elif side == "out":
                layer.weight[idxs] = 0
            else:
                layer.weight[:, idxs] = 0


def assert_costs_agree(space: PruningSpace, policy: PruningPolicy, pruned: nn.Module, x: torch.Tensor) -> None:
    """The space's analytic MACs and params at the policy are those counted on the pruned model."""
    assert (space.macs(policy.channels), space.params(policy.channels)) == count_macs_params(pruned, x)


def assert_same_after_pruning(model: nn.Module, x: torch.Tensor, widths: dict[str, int]) -> nn.Module:
    space = PruningSpace.build(model, x)
    policy = PruningPolicy.from_widths(space, widths)
    pruned = apply_policy(model, policy, x, space=space).eval()
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=1e-4)
    assert_costs_agree(space, policy, pruned, x)
    return pruned


# --- convolutional classifier heads ------------------------------------------------------------


class ConvHead(nn.Module):
    """SqueezeNet's head: a 1x1 conv to the classes, ReLU, global pooling, flatten."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 16, 3), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(), nn.Conv2d(16, classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


def test_a_convolutional_classifier_head_keeps_the_class_count() -> None:
    model, x = ConvHead().eval(), torch.randn(2, 3, 16, 16)
    space = PruningSpace.build(model, x)
    assert space.names == ("features.0.0",)  # the head is no group of its own
    pruned = apply_policy(model, PruningPolicy.uniform(space, 0.5), x, space=space)
    assert pruned.classifier[1].out_channels == 10 and pruned.classifier[1].in_channels == 8
    assert pruned(x).shape == (2, 10)


# --- channel shuffle ---------------------------------------------------------------------------


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's stride-1 unit: split, one branch (1x1, depthwise 3x3, 1x1), concat, shuffle."""

    def __init__(self, c: int) -> None:
        super().__init__()
        half = c // 2
        self.branch = nn.Sequential(conv_bn(half, half), nn.ReLU(), conv_bn(half, half, 3, groups=half),
                                    conv_bn(half, half), nn.ReLU())  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((x1, self.branch(x2)), dim=1), 2)


class TinyShuffleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3), nn.ReLU())
        self.units = nn.Sequential(ShuffleUnit(16), ShuffleUnit(16))
        self.head = nn.Sequential(conv_bn(16, 32), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.units(self.stem(x))))


def test_channel_shuffle_keeps_shuffled_channels_whole_and_prunes_the_branches() -> None:
    model, x = TinyShuffleNet().eval(), torch.randn(2, 3, 16, 16)
    space = PruningSpace.build(model, x)
    # The stem and each branch's last conv feed a shuffle: kept whole. The branch insides and
    # the head conv are groups.
    assert set(space.names) == {"units.0.branch.0.0", "units.1.branch.0.0", "head.0.0"}
    unit = model.units[1].branch
    kill([(unit[0][0], "out"), (unit[0][1], "out"), (unit[2][0], "out"), (unit[2][1], "out"), (unit[3][0], "in")],
         [1, 2, 5, 6])  # fmt: skip
    pruned = assert_same_after_pruning(model, x, {"units.1.branch.0.0": 4})
    assert pruned.units[1].branch[2][0].groups == 4 and pruned.stem[0][0].out_channels == 16


def test_channel_regrouping_is_read_from_the_reshape_of_a_5d_tensor() -> None:
    x = torch.randn(1, 8, 4, 4, requires_grad=True)
    assert patterns.regroup_channels(channel_shuffle(x, 2).grad_fn) == 8
    assert patterns.regroup_channels(torch.flatten(x, 1).grad_fn) is None


# --- window attention and patch merging (Swin) ---------------------------------------------------


class TinySwin(nn.Module):
    """Patch embedding, a shifted-window block, patch merging, another block, a linear head."""

    def __init__(self, v2: bool = False) -> None:
        super().__init__()
        block, merge = (SwinTransformerBlockV2, PatchMergingV2) if v2 else (SwinTransformerBlock, PatchMerging)
        self.embed = nn.Conv2d(3, 24, 4, 4)
        self.norm0 = nn.LayerNorm(24)
        self.block1 = block(24, 3, window_size=[4, 4], shift_size=[2, 2])
        self.merge = merge(24)
        self.block2 = block(48, 6, window_size=[4, 4], shift_size=[0, 0])
        self.norm = nn.LayerNorm(48)
        self.head = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm0(self.embed(x).permute(0, 2, 3, 1))
        x = self.block2(self.merge(self.block1(x)))
        return self.head(self.norm(x).mean(dim=(1, 2)))


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_window_attention_and_patch_merging_are_pruned_with_heads_and_tables_whole(v2: bool) -> None:
    model, x = TinySwin(v2).eval(), torch.randn(2, 3, 32, 32)
    start = time.monotonic()
    space = PruningSpace.build(model, x)
    assert time.monotonic() - start < 30
    by_name = {g.name: g for g in space.groups}
    assert set(by_name) == {"embed", "block1.mlp.0", "merge.reduction", "block2.mlp.0"}
    assert (by_name["embed"].multiple, by_name["merge.reduction"].multiple) == (3, 6)  # whole heads
    assert {"block1.attn.qkv", "block1.attn.proj", "merge.reduction"} <= set(by_name["embed"].modules)
    table = model.block1.attn.relative_position_bias_table if not v2 else model.block1.attn.cpb_mlp[2].weight
    policy = PruningPolicy.uniform(space, 0.5)
    pruned = apply_policy(model, policy, x, space=space)
    attn = pruned.block1.attn
    assert (attn.qkv.in_features, attn.qkv.out_features, attn.proj.in_features, attn.proj.out_features) == (
        12, 36, 12, 12,
    )  # fmt: skip
    pruned_table = attn.relative_position_bias_table if not v2 else attn.cpb_mlp[2].weight
    assert pruned_table.shape == table.shape and attn.num_heads == 3
    assert pruned.merge.reduction.in_features == 4 * 12 and pruned.merge.reduction.out_features == 24
    assert pruned(x).shape == (2, 10)
    assert_costs_agree(space, policy, pruned, x)  # qkv and proj, used functionally, are counted
    qkv = next(r for r in space.cost.records if r.name == "block1.attn.qkv")
    assert [c.tokens for c in qkv.calls] == [8 * 8]  # one call on the 8x8 tokens of the first stage


def test_patch_merging_prunes_the_four_copies_of_each_channel() -> None:
    model, x = TinySwin().eval(), torch.randn(2, 3, 32, 32)
    space = PruningSpace.build(model, x)
    kept: adapter.KeptIndices = {}
    pruned = apply_policy(model, PruningPolicy.from_widths(space, {"embed": 12}), x, space=space, kept=kept)
    keep = list(kept[("embed", "out")])
    cols = [j * 24 + i for j in range(4) for i in keep]
    assert list(kept[("merge.reduction", "in")]) == sorted(cols) and list(kept[("block1.attn.qkv", "in")]) == keep
    torch.testing.assert_close(pruned.merge.reduction.weight, model.merge.reduction.weight[:, sorted(cols)])
    torch.testing.assert_close(pruned.merge.norm.weight, model.merge.norm.weight[sorted(cols)])


# --- squeeze-excite, concatenated branches, grouped convolutions ---------------------------------


class SEBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv_bn(3, 16, 3), nn.ReLU())
        self.se = SqueezeExcitation(16, 4)
        self.out = nn.Sequential(conv_bn(16, 8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.se(self.conv(x)))


def test_squeeze_excite_scales_move_with_the_channels_they_scale() -> None:
    model, x = SEBlock().eval(), torch.randn(2, 3, 16, 16)
    space = PruningSpace.build(model, x)
    assert {"se.fc2", "se.fc1"} <= set(space.group("conv.0.0").modules) and "se.fc1" in space.names
    conv, bn = model.conv[0]
    kill([(conv, "out"), (bn, "out"), (model.se.fc2, "out"), (model.se.fc1, "in"), (model.out[0][0], "in")],
         list(range(8, 16)))  # fmt: skip
    pruned = assert_same_after_pruning(model, x, {"conv.0.0": 8})
    assert pruned.se.fc2.out_channels == 8 and pruned.se.fc1.in_channels == 8


class Concat(nn.Module):
    """Inception's pattern: two branches of different widths concatenated, then one consumer."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(conv_bn(3, 4), nn.ReLU())
        self.b = nn.Sequential(conv_bn(3, 8, 3), nn.ReLU())
        self.mix = nn.Sequential(conv_bn(12, 8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(torch.cat([self.a(x), self.b(x)], dim=1))


def test_concatenated_branches_prune_the_consumer_at_each_branch_offset() -> None:
    model, x = Concat().eval(), torch.randn(2, 3, 16, 16)
    kill([(model.b[0][0], "out"), (model.b[0][1], "out")], [0, 3, 4, 7])
    with torch.no_grad():
        model.mix[0][0].weight[:, [4 + 0, 4 + 3, 4 + 4, 4 + 7]] = 0  # consumer columns of the dead channels
    pruned = assert_same_after_pruning(model, x, {"b.0.0": 4})
    assert pruned.mix[0][0].in_channels == 8 and pruned.a[0][0].out_channels == 4


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3), nn.ReLU())
        self.grouped = nn.Sequential(conv_bn(16, 16, 3, groups=4), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.grouped(self.stem(x)))


def test_grouped_convolutions_prune_whole_offsets_in_every_group() -> None:
    model, x = Grouped().eval(), torch.randn(2, 3, 16, 16)
    space = PruningSpace.build(model, x)
    assert space.group("stem.0.0").multiple == 4 and space.group("grouped.0.0").multiple == 4
    assert PruningPolicy.from_widths(space, {"stem.0.0": 6}).channels["stem.0.0"] % 4 == 0
    dead = [b * 4 + o for b in range(4) for o in (1, 2)]  # the same two offsets in each of the 4 groups
    kill([(model.stem[0][0], "out"), (model.stem[0][1], "out")], dead)
    pruned = assert_same_after_pruning(model, x, {"stem.0.0": 8})
    assert pruned.grouped[0][0].groups == 4 and pruned.grouped[0][0].in_channels == 8


# --- bounded analysis ----------------------------------------------------------------------------


class Slow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        until = time.monotonic() + 20
        while time.monotonic() < until:  # a pathological module: busy for 20 s
            pass
        return self.conv(x)


class WithSlow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        self.slow = Slow()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.slow(self.stem(x)).mean(dim=(2, 3))


def test_analysis_is_refused_within_its_time_limit_naming_the_module() -> None:
    start = time.monotonic()
    match = r"stopped at module 'slow' \(Slow\): it reached its time limit of 4 s"
    with pytest.raises(GraphAnalysisError, match=match):
        adapter.analyse(WithSlow(), torch.randn(1, 3, 8, 8), limits=Limits(seconds=4, memory_gb=4))
    # the answer comes by the limit, not after it: the watchdog stops the block 0.2 s early
    assert 4 - 0.2 <= time.monotonic() - start < 4


def test_default_limits_are_30_s_and_4_gib() -> None:
    import os

    assert Limits().seconds == float(os.environ.get("PRUNEPILOT_GRAPH_MAX_SECONDS", 30))
    assert Limits().memory_gb == float(os.environ.get("PRUNEPILOT_GRAPH_MAX_GB", 4))


def test_errors_name_the_module_or_operation_a_function_was_given() -> None:
    conv = nn.Conv2d(1, 1, 1)
    names = {conv: "features.0"}
    view = torch.randn(1, 2, requires_grad=True).view(2)

    def work(node: object) -> None:
        scratch = conv  # noqa: F841 - a local that is not an argument names nothing
        raise ZeroDivisionError

    for node, where in (
        (SimpleNamespace(module=conv, grad_fn=None), "module 'features.0' (Conv2d)"),  # a layer's graph node
        (SimpleNamespace(module=object(), grad_fn=view.grad_fn), "operation ViewBackward0"),  # an op's node
        (object(), None),
    ):
        with pytest.raises(ZeroDivisionError) as info:
            work(node)
        assert locate_in(info.value.__traceback__, names) == where
