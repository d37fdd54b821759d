"""Iterative pruning: reach a policy's widths in ``K`` steps, fine-tuning between them.

One-shot pruning at high ratios removes many channels from weights that were never trained to
do without them; pruning a fraction, fine-tuning, and repeating (Han et al. 2015; Li et al.
2017) usually recovers more accuracy for the same final widths.

The schedule is **linear in the keep ratio** of every group: at step ``i`` of ``K`` a group of
``C`` channels whose target is ``c`` keeps ``C - (C - c) * i / K`` channels, rounded like the
policy (its ``round_to`` and the group's block multiple), never below the target and never
above the previous step. The last step is exactly the target.
"""

from __future__ import annotations

from prunepilot.errors import ConfigError
from prunepilot.pruning import PruningPolicy, PruningSpace, round_width


def interpolate_widths(space: PruningSpace, target: PruningPolicy, steps: int) -> list[dict[str, int]]:
    """Widths per group for each of ``steps`` steps from full width to ``target`` (inclusive).

    Args:
        space: The unpruned model's space (full widths and block multiples).
        target: The policy to reach; it must fit ``space``.
        steps: ``K >= 1``; ``1`` is one-shot pruning.

    Example:
        >>> interpolate_widths(space, policy, 2)   # doctest: +SKIP
        [{'conv1': 12, ...}, {'conv1': 8, ...}]
    """
    if steps < 1:
        raise ConfigError(f"iterative steps must be >= 1 (1 is one-shot pruning), got {steps}")
    target.check(space)
    schedule: list[dict[str, int]] = []
    previous = space.full_widths()
    for i in range(1, steps + 1):
        if i == steps:
            widths = {g.name: int(target.channels[g.name]) for g in space.groups}
        else:
            widths = {}
            for g in space.groups:
                keep = target.channels[g.name] / g.channels
                ratio = 1.0 - (1.0 - keep) * i / steps
                w = round_width(ratio, g.channels, g.multiple, target.round_to)
                widths[g.name] = min(previous[g.name], max(int(target.channels[g.name]), w))
        schedule.append(widths)
        previous = widths
    return schedule
