"""Dependency groups as plain data: what the adapter reports about a model's coupled layers.

:func:`~prunepilot.pruning.adapter.list_groups` traces a model with Torch-Pruning and reduces
each dependency group to a :class:`RawGroup` of :class:`DepRecord` entries (module names, sides,
sizes), so no Torch-Pruning object leaves the adapter; :class:`~prunepilot.pruning.space.PruningSpace`
builds its public :class:`~prunepilot.pruning.space.GroupInfo` from these. The types are
re-exported by :mod:`prunepilot.pruning.adapter`. :func:`output_layers` finds the layers no group
may prune: classifier heads, linear or convolutional (SqueezeNet's ``Conv2d(512, 1000, 1)``),
which keep the class count.

Example:
    >>> from torch import nn
    >>> channel_blocks(nn.Conv2d(8, 16, 3, groups=4)), channel_blocks(nn.Linear(4, 4))
    (4, 1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from prunepilot.errors import PruningError
from prunepilot.pruning.patterns import composite_of

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
    spec = composite_of(module)
    return spec.blocks(module) if spec is not None else 1


def check_widths(groups: Sequence[RawGroup], widths: Mapping[str, int]) -> None:
    """Raise :class:`PruningError` unless ``widths`` names only ``groups`` and each width is allowed
    (in ``[blocks, channels]`` and a multiple of the group's channel blocks)."""
    known = {g.name for g in groups}
    unknown = sorted(set(widths) - known)
    if unknown:
        raise PruningError(f"groups {unknown} are not prunable groups of this model; groups: {sorted(known)}")
    for raw in groups:
        want = int(widths.get(raw.name, raw.channels))
        if not 1 <= want <= raw.channels or want % raw.blocks:
            raise PruningError(
                f"group {raw.name!r}: width {want} is not allowed; it must be in "
                f"[{raw.blocks}, {raw.channels}] and a multiple of {raw.blocks}"
            )


#: Layers that mix channels: a walk from a layer to the model output stops at them.
_MIXING = (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention, nn.Embedding, nn.LSTM)


def _mixes_channels(module: Any) -> bool:
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.out_channels > 1:
        return False  # depthwise: channel i stays channel i
    spec = composite_of(module)
    return isinstance(module, _MIXING) or (spec is not None and not spec.passthrough)


def output_layers(graph: Any) -> list[nn.Module]:
    """Conv/Linear layers whose output channels reach the model output unchanged (classifier heads).

    Walks Torch-Pruning's traced graph (``graph.module2node``) forward from each conv/linear
    layer through channel-preserving operations (norms, activations, pooling, adds, reshapes,
    depthwise convs, passthrough composite layers); reaching the model output before any
    channel-mixing layer makes it an output layer, whose output channels are never pruned.
    """
    found: list[nn.Module] = []
    for module, node in graph.module2node.items():
        if not isinstance(module, nn.modules.conv._ConvNd | nn.Linear):
            continue
        stack, seen = list(node.outputs), set()
        if not stack:
            found.append(module)
        while stack:
            n = stack.pop()
            if n in seen or _mixes_channels(n.module):
                continue
            seen.add(n)
            if not n.outputs:  # the model output
                found.append(module)
                break
            stack.extend(n.outputs)
    return found
