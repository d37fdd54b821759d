"""A policy file that leaves a group out, whose ratios disagree with its channels, or names an
unknown criterion is refused with the group, the values and what would be accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prunepilot.errors import PolicyError, PruningError
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy

X = torch.zeros(1, 3, 16, 16)


@pytest.fixture
def tiny() -> tuple[torch.nn.Module, PruningSpace]:
    model = build_model("testing:tiny-convnet").eval()
    return model, PruningSpace.build(model, X)


def _edited(policy: PruningPolicy, tmp_path: Path, edit: object) -> Path:
    raw = json.loads(policy.to_json())
    edit(raw)  # type: ignore[operator]
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(raw))
    return path


def test_a_group_missing_from_channels_is_named_with_the_accepted_ones(tiny, tmp_path: Path) -> None:
    model, space = tiny
    policy = PruningPolicy.uniform(space, 0.5)
    gone = space.names[1]
    for field in ("channels", "keep_ratios"):
        path = _edited(policy, tmp_path, lambda raw, f=field: raw[f].pop(gone))
        with pytest.raises(PolicyError) as info:
            PruningPolicy.load(path)
        message = str(info.value)
        assert f"{field} has no entry for group(s) [{gone!r}]" in message
        assert all(repr(name) in message for name in space.names)  # the accepted groups
        assert "full width" in message  # how to fill it in
    # a policy built in Python without the group fails when applied, not silently at full width
    partial = policy.model_copy(update={"channels": {n: c for n, c in policy.channels.items() if n != gone}})
    with pytest.raises(PolicyError, match=rf"no entry for group\(s\) \[{gone!r}\]"):
        apply_policy(model, partial, X, space=space)


def test_a_group_the_policy_does_not_know_is_refused(tiny, tmp_path: Path) -> None:
    _model, space = tiny
    path = _edited(PruningPolicy.uniform(space, 0.5), tmp_path, lambda raw: raw["channels"].update({"nope": 3}))
    with pytest.raises(PolicyError, match=r"channels names group\(s\) \['nope'\] that are not among"):
        PruningPolicy.load(path)


def test_keep_ratios_that_disagree_with_channels_name_the_group_and_both_values(tiny, tmp_path: Path) -> None:
    model, space = tiny
    group = space.groups[1]  # 16 channels
    policy = PruningPolicy.uniform(space, 0.5)
    path = _edited(policy, tmp_path, lambda raw: raw["channels"].update({group.name: 14}))
    loaded = PruningPolicy.load(path)  # the file is well formed; the model tells what rounding allows
    with pytest.raises(PolicyError) as info:
        apply_policy(model, loaded, X, space=space)
    message = str(info.value)
    assert f"{group.name!r}: keep_ratios 0.5" in message and "channels 14" in message
    assert "rounds to 8" in message and "channels divided by its group_channels" in message


def test_rounding_is_not_a_disagreement(tiny) -> None:
    model, space = tiny
    group = space.groups[1]  # 16 channels; 0.3 of them is 4.8
    base = PruningPolicy.from_ratios(space, {group.name: 0.3})
    assert base.channels[group.name] == 5
    floor = base.model_copy(update={"channels": {**base.channels, group.name: 4}})  # the other grid neighbour
    pruned = apply_policy(model, floor, X, space=space)
    assert pruned(X).shape == (1, 10)
    coarse = PruningPolicy.from_ratios(space, {group.name: 0.3}, round_to=8)
    assert coarse.channels[group.name] == 8  # rounded to the grid of 8: still agrees
    coarse.check(space)


def test_unknown_importance_in_a_policy_file_lists_the_criteria(tiny, tmp_path: Path) -> None:
    _model, space = tiny
    policy = PruningPolicy.uniform(space, 0.5)
    path = _edited(policy, tmp_path, lambda raw: raw.update({"importance": "magic"}))
    with pytest.raises(PolicyError) as info:
        PruningPolicy.load(path)
    message = str(info.value)
    assert "'magic'" in message and "'l1'" in message and "'taylor'" in message and "importance" in message
    path = _edited(policy, tmp_path, lambda raw: raw.update({"importance": "Fisher"}))
    assert PruningPolicy.load(path).importance == "hessian"  # aliases are read as their criterion


def test_hessian_without_calibration_batches_is_an_error_not_a_no_op(tiny) -> None:
    model, space = tiny
    policy = PruningPolicy.uniform(space, 0.5, importance="hessian")
    with pytest.raises(PruningError, match="importance 'hessian' needs calibration batches"):
        apply_policy(model, policy, X, space=space)
