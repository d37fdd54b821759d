"""Policy portability: same architecture with other weights, mismatches, --by-ratio; iterative schedules."""

from __future__ import annotations

import json

import pytest
import torch
from apply_helpers import calibrated, random_policy

from prunepilot.apply import ApplyConfig, apply_to_model, fit_policy, interpolate_widths
from prunepilot.errors import ConfigError, PolicyError
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace


def _space(spec: str, shape: tuple[int, ...] = (1, 3, 32, 32), **kw: object) -> PruningSpace:
    return PruningSpace.build(build_model(spec, in_channels=shape[1], **kw), torch.zeros(shape))  # type: ignore[arg-type]


def test_a_policy_from_one_checkpoint_applies_to_another(make_case, tmp_path) -> None:
    _a, _ckpt_a, policy_path, policy = make_case("resnet20", (1, 3, 32, 32), seed=1, name="a")
    b, ckpt_b, _p, _ = make_case("resnet20", (1, 3, 32, 32), seed=2, name="b")
    result = apply_to_model(
        ApplyConfig(
            policy=policy_path,
            model="resnet20",
            checkpoint=ckpt_b,
            out=tmp_path / "out",
            input_shape=(1, 3, 32, 32),
            measure_latency=False,
        )
    )
    assert result.report["policy_match"] == "signature"
    assert result.policy.channels == policy.channels
    # the channels kept are B's own filters, chosen on B's weights
    kept = result.model.conv1.weight.detach()
    full = b.conv1.weight.detach()
    assert kept.shape[0] == policy.channels["conv1"]
    assert all(any(torch.equal(row, f) for f in full) for row in kept)


def test_a_mismatched_policy_lists_the_groups_that_differ(make_case, tmp_path) -> None:
    _m, _c, policy_path, _p = make_case("resnet20", (1, 3, 32, 32))
    with pytest.raises(PolicyError) as info:
        apply_to_model(
            ApplyConfig(
                policy=policy_path,
                model="resnet32",
                out=tmp_path / "out",
                input_shape=(1, 3, 32, 32),
                measure_latency=False,
            )
        )
    msg = str(info.value)
    assert "does not match" in msg and "only in the model" in msg and "layer3.4.conv1" in msg
    assert not (tmp_path / "out").exists()  # nothing is written for a policy that does not fit
    with pytest.raises(PolicyError, match="cannot match"):
        fit_policy(PruningPolicy.load(policy_path), _space("resnet32"), by_ratio=True)


def test_by_ratio_applies_keep_ratios_to_a_wider_variant_by_name() -> None:
    narrow, wide = _space("simplecnn", (1, 1, 28, 28)), _space("simplecnn?width_mult=2.0", (1, 1, 28, 28))
    assert narrow.names == wide.names and narrow.signature != wide.signature
    policy = random_policy(narrow, seed=3)
    with pytest.raises(PolicyError, match="--by-ratio"):
        fit_policy(policy, wide)
    adapted, match = fit_policy(policy, wide, by_ratio=True)
    assert match == "by-ratio: names" and adapted.signature == wide.signature
    for g in wide.groups:
        want = policy.channels[g.name] / policy.group_channels[g.name]
        assert abs(adapted.channels[g.name] / g.channels - want) <= 1.0 / g.channels + 1e-9
    assert adapted.metadata["adapted_from"]["signature"] == policy.signature


def test_by_ratio_matches_by_order_when_names_differ_but_counts_match() -> None:
    space = _space("resnet20")
    policy = random_policy(space, seed=4)
    data = json.loads(policy.to_json())
    for key in ("keep_ratios", "channels", "group_channels"):
        data[key] = {f"renamed.{i}": v for i, v in enumerate(data[key].values())}
    data["signature"] = "0" * 16
    renamed = PruningPolicy.from_json(json.dumps(data))
    adapted, match = fit_policy(renamed, space, by_ratio=True)
    assert match == "by-ratio: order"
    assert adapted.channels == policy.channels


def test_interpolated_schedule_is_monotone_and_ends_at_the_target() -> None:
    space = _space("mobilenetv2")
    target = random_policy(space, seed=5, round_to=4)
    assert interpolate_widths(space, target, 1) == [target.channels]
    steps = interpolate_widths(space, target, 3)
    assert len(steps) == 3 and steps[-1] == target.channels
    previous = space.full_widths()
    for widths in steps:
        for g in space.groups:
            assert target.channels[g.name] <= widths[g.name] <= previous[g.name]
            assert widths[g.name] == g.channels or widths[g.name] % g.multiple == 0
        previous = widths
    assert steps[0] != steps[1]
    with pytest.raises(ConfigError, match=">= 1"):
        interpolate_widths(space, target, 0)


def test_trace_shortcut_falls_back_to_the_real_input_size() -> None:
    from prunepilot.apply import build_space

    model = calibrated(build_model("torchvision:resnet18"), (1, 3, 64, 64))
    space, x = build_space(model, (1, 3, 64, 64), 10)
    assert tuple(x.shape) == (1, 3, 32, 32)
    assert space.signature == PruningSpace.build(model, torch.zeros(1, 3, 64, 64)).signature
    # a head that only fits the real size (flatten -> linear) is traced at it
    flat = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 62 * 62, 10))
    _space_full, x_full = build_space(flat, (1, 3, 64, 64), 10)
    assert tuple(x_full.shape) == (1, 3, 64, 64)
