"""Dependency groups as plain data: what the adapter reports about a model's coupled layers.

:func:`~prunepilot.pruning.adapter.list_groups` traces a model with Torch-Pruning and reduces
each dependency group to a :class:`RawGroup` of :class:`DepRecord` entries (module names, sides,
sizes), so no Torch-Pruning object leaves the adapter; :class:`~prunepilot.pruning.space.PruningSpace`
builds its public :class:`~prunepilot.pruning.space.GroupInfo` from these. The types are
re-exported by :mod:`prunepilot.pruning.adapter`.

Example:
    >>> from torch import nn
    >>> channel_blocks(nn.Conv2d(8, 16, 3, groups=4)), channel_blocks(nn.Linear(4, 4))
    (4, 1)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

#: Kept indices per ``(module name, side)`` of a pruned model, into the unpruned module ("out"/"in").
KeptIndices = dict[tuple[str, str], tuple[int, ...]]


@dataclass(frozen=True)
class DepRecord:
    """One coupled layer of a dependency group: which module, which side, how many indices."""

    module: str
    side: str  # "out" or "in"
    count: int
    full: int  # the module's full size on that side


@dataclass(frozen=True)
class RawGroup:
    """A dependency group as Torch-Pruning reports it, reduced to plain data."""

    name: str
    channels: int
    blocks: int
    deps: tuple[DepRecord, ...]


def channel_blocks(module: nn.Module) -> int:
    """Channel blocks a module needs its channels kept in (grouped conv groups, heads)."""
    if isinstance(module, nn.modules.conv._ConvNd) and 1 < module.groups < module.out_channels:
        return int(module.groups)
    if isinstance(module, nn.MultiheadAttention):
        return int(module.num_heads)
    return 1
