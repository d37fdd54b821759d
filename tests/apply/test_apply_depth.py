"""A policy that removes residual blocks, applied: the report names the removed blocks, the model
lacks them, and load_pruned rebuilds it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import prunepilot
from prunepilot.apply import ApplyConfig, apply_to_model
from prunepilot.errors import CheckpointError
from prunepilot.pruning import PruningPolicy, PruningSpace


def test_removed_blocks_are_reported_and_gone_from_the_applied_model(make_case, tmp_path: Path) -> None:
    shape = (1, 3, 32, 32)
    model, ckpt, _path, _policy = make_case("resnet20", shape, seed=3)
    space = PruningSpace.build(model, torch.zeros(shape))
    gone = [space.blocks[1].name, space.blocks[-1].name]
    policy = PruningPolicy.uniform(space, 0.5).with_removed_blocks(space, gone)
    path = policy.save(tmp_path / "depth-policy.json")
    out = tmp_path / "out"
    result = apply_to_model(
        ApplyConfig(policy=path, model="resnet20", checkpoint=ckpt, out=out, input_shape=shape, measure_latency=False)
    )
    assert result.report["removed_blocks"] == sorted(gone)
    modules = dict(result.model.named_modules())
    assert all(isinstance(modules[name], nn.Identity) for name in gone)
    reloaded = prunepilot.load_pruned(out).eval()
    x = torch.randn(2, *shape[1:])
    with torch.no_grad():
        assert torch.allclose(reloaded(x), result.model.eval()(x), atol=1e-6)
    # a folder whose policy names a module that is not a removable block is refused, not loaded
    manifest = json.loads((out / "pruned.json").read_text())
    policy_file = out / manifest["policy"]
    tampered = json.loads(policy_file.read_text())
    tampered["removed_blocks"] = sorted([*gone, "conv1"])
    policy_file.write_text(json.dumps(tampered))
    with pytest.raises(CheckpointError, match="not a removable block: unknown block 'conv1'"):
        prunepilot.load_pruned(out)
    plain = apply_to_model(
        ApplyConfig(
            policy=_path,
            model="resnet20",
            checkpoint=ckpt,
            out=tmp_path / "plain",
            input_shape=shape,
            measure_latency=False,
        )  # fmt: skip
    )
    assert plain.report["removed_blocks"] == []
