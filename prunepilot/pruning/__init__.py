"""The pruning core: dependency groups, policies, and structural pruning via Torch-Pruning.

Public API::

    space = PruningSpace.build(model, torch.randn(1, 3, 32, 32))
    policy = PruningPolicy.uniform(space, 0.5)          # keep half of every group
    space.macs(policy.channels), space.params(policy.channels)   # analytic, no pruning
    space.blocks                                        # residual blocks that can go whole
    policy = policy.with_removed_blocks(space, [space.blocks[0].name])
    space.macs(policy.channels, policy.removed_blocks)  # without the removed blocks
    small = apply_policy(model, policy, torch.randn(1, 3, 32, 32), space=space)
    recalibrate_bn(small, calib_loader)
    # both steps, as the evaluator, apply and prune take them (calib: a list of (x, y) batches)
    small = prune_and_recalibrate(model, policy, torch.randn(1, 3, 32, 32), space=space, calib_batches=calib)
"""

from __future__ import annotations

from prunepilot.pruning.adapter import IMPORTANCE_CRITERIA, TORCH_PRUNING_VERSION, canonical_importance
from prunepilot.pruning.apply import apply_policy
from prunepilot.pruning.bn import recalibrate_bn
from prunepilot.pruning.cost import count_macs_params
from prunepilot.pruning.depth import BlockInfo, register_block
from prunepilot.pruning.guard import Limits
from prunepilot.pruning.layers import LayerShape
from prunepilot.pruning.policy import POLICY_FORMAT, POLICY_FORMAT_V2, POLICY_FORMATS, PruningPolicy, round_width
from prunepilot.pruning.prepare import prune_and_recalibrate
from prunepilot.pruning.space import GroupInfo, PruningSpace

__all__ = [
    "IMPORTANCE_CRITERIA",
    "POLICY_FORMAT",
    "POLICY_FORMATS",
    "POLICY_FORMAT_V2",
    "TORCH_PRUNING_VERSION",
    "BlockInfo",
    "GroupInfo",
    "LayerShape",
    "Limits",
    "PruningPolicy",
    "PruningSpace",
    "apply_policy",
    "canonical_importance",
    "count_macs_params",
    "prune_and_recalibrate",
    "recalibrate_bn",
    "register_block",
    "round_width",
]
