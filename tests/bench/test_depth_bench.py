"""bench/depth.py: the four variants of each model, and the user-style model's blocks."""

from __future__ import annotations

import torch
from bench_helpers import load

from prunepilot.pruning import PruningSpace


def test_the_user_style_model_has_its_own_blocks_and_each_variant_applies() -> None:
    depth = load("depth")
    model = depth.build("user-cnn")
    space = PruningSpace.build(model, torch.zeros(1, 1, 28, 28))
    assert [b.name for b in space.blocks] == [f"stage{s}.{i}" for s in (1, 2) for i in range(3)]
    vs = depth.variants(model, 0.1)
    assert list(vs) == list(depth.VARIANTS)
    x = torch.randn(2, 1, 28, 28)
    macs = {}
    for name, (policy, applied) in vs.items():
        assert applied(x).shape == (2, 10)
        macs[name] = space.macs(policy.channels, policy.removed_blocks)
        assert len(policy.removed_blocks) == (6 if "depth" in name else 0)
    assert macs["depth+width"] < min(macs["width"], macs["depth"]) and max(macs["width"], macs["depth"]) < macs["base"]
    timed = depth.measure({k: m for k, (_p, m) in vs.items()}, batch=1, rounds=1)
    assert set(timed) == set(depth.VARIANTS) and all(ms > 0 for ms, _spread in timed.values())
