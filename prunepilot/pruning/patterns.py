"""Model patterns Torch-Pruning's tracing misreads, described as plain data for the adapter.

Torch-Pruning builds its dependency graph from autograd: every module it has a pruner for is a
node, every other operation an element-wise, reshape, slice or concat node. Two patterns of
torchvision's classification models break that, and the adapter
(:mod:`prunepilot.pruning.adapter`) handles both through Torch-Pruning's own extension point,
customized pruners:

* **Channel regrouping** (ShuffleNet's channel shuffle, ``x.view(b, g, c // g, h, w)
  .transpose(1, 2).reshape(b, c, h, w)``): Torch-Pruning reads the reshapes as flattens and
  fails (``ZeroDivisionError``). The reshape out of a 5-D tensor (:func:`regroup_channels`)
  becomes a node that keeps its ``c`` channels and passes no pruning through; every group whose
  channels reach it is **kept whole** (left out of the pruning space). The layers inside the
  shuffled branches are pruned as usual.
* **Composite layers** (:class:`CompositeLayer`): layers that use their sub-layers' weights
  functionally or reshape along other axes than channels, so that their inside reads as
  channel operations. Swin's window attention calls ``F.linear(x, self.qkv.weight)`` and
  partitions windows with 6-D reshapes of a channels-last tensor; its patch merging
  concatenates strided height/width slices, which a 4-D slice on dim 1 makes look like a
  channel slice. Each such layer is one node: its inside is cut out of the graph, its
  channels are pruned member by member (:attr:`CompositeLayer.inputs` / ``outputs``) by
  Torch-Pruning's standard pruners, and its relative-position tables and heads stay whole.

Composite layers are found by class name, like fix-ups (:mod:`prunepilot.pruning.fixups`);
register your own with :func:`register_composite`.

Example:
    >>> from torch import nn
    >>> merge = COMPOSITES["PatchMerging"]
    >>> layer = nn.Module(); layer.norm = nn.LayerNorm(32); layer.reduction = nn.Linear(32, 16)
    >>> merge.in_channels(layer), merge.out_channels(layer)
    (8, 16)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

Side = Literal["in", "out"]

#: Rank of the tensor a regrouping reshape reads: ``(batch, groups, channels per group, h, w)``.
REGROUP_RANK = 5


@dataclass(frozen=True)
class Member:
    """A sub-layer whose channels move with one side of a composite layer.

    Attributes:
        path: The sub-layer's name inside the composite layer (``"qkv"``, ``"reduction"``).
        side: Which of the sub-layer's sides carries the channels (``"out"`` for norms).
        copies: How many consecutive copies of the channels the sub-layer holds on that side
            (4 for patch merging's concatenation of four slices: channel ``i`` of copy ``j`` is
            index ``j * channels + i``).
    """

    path: str
    side: Side
    copies: int = 1


@dataclass(frozen=True)
class CompositeLayer:
    """How to prune a layer that Torch-Pruning must treat as one node.

    Attributes:
        kind: What the layer is, in words (error messages and the docs).
        inputs: Members pruned with the layer's input channels.
        outputs: Members pruned with its output channels.
        passthrough: Input and output channels are one set (a residual-stream layer such as
            window attention): pruning either side prunes every member.
        tied: Members of a passthrough layer whose channels follow its width by construction
            (window attention's head dimension is its input width over its heads, so qkv's
            three outputs and proj's input are pruned with the residual stream).
        heads: Attribute holding a head count the channels must stay divisible into (the
            group's channel blocks; each head keeps the same offsets), or None.
        root: The member whose output channels start a prunable group (and name it), or None
            when the layer's outputs are never a group of their own.
    """

    kind: str
    inputs: tuple[Member, ...]
    outputs: tuple[Member, ...]
    passthrough: bool = False
    tied: tuple[Member, ...] = ()
    heads: str | None = None
    root: str | None = None

    def members(self, side: Side) -> tuple[Member, ...]:
        """The members pruned with ``side`` (every member for a passthrough layer)."""
        if self.passthrough:
            return self.inputs + self.outputs + self.tied
        return self.inputs if side == "in" else self.outputs

    def blocks(self, layer: nn.Module) -> int:
        """Channel blocks of ``layer`` (its head count, or 1)."""
        return int(getattr(layer, self.heads)) if self.heads else 1

    def channels(self, layer: nn.Module, side: Side) -> int:
        """The layer's channel count on ``side``, read from its first member on that side."""
        member = (self.inputs if side == "in" else self.outputs)[0]
        return member_size(layer.get_submodule(member.path), member.side) // member.copies

    def in_channels(self, layer: nn.Module) -> int:
        """Input channels of ``layer``."""
        return self.channels(layer, "in")

    def out_channels(self, layer: nn.Module) -> int:
        """Output channels of ``layer``."""
        return self.channels(layer, "out")

    def expand(
        self, layer: nn.Module, side: Side, idxs: Sequence[int]
    ) -> Iterator[tuple[str, nn.Module, Side, list[int]]]:
        """``(path, sub-layer, its side, its indices)`` for channel indices ``idxs`` of ``side``."""
        block = self.channels(layer, side)
        for m in self.members(side):
            sub = layer.get_submodule(m.path)
            yield m.path, sub, m.side, [j * block + int(i) for j in range(m.copies) for i in idxs]


def member_size(module: nn.Module, side: Side) -> int:
    """A standard layer's size on one side (Linear, Conv, LayerNorm, BatchNorm)."""
    if isinstance(module, nn.Linear):
        return int(module.out_features if side == "out" else module.in_features)
    if isinstance(module, nn.modules.conv._ConvNd):
        return int(module.out_channels if side == "out" else module.in_channels)
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[-1])
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return int(module.num_features)
    raise TypeError(
        f"a composite layer's member must be a Linear, Conv, LayerNorm or BatchNorm layer, not {type(module).__name__}"
    )


_WINDOW_ATTENTION = CompositeLayer(
    "window attention (qkv and proj used functionally; heads and relative-position tables kept whole)",
    inputs=(Member("qkv", "in"),),
    outputs=(Member("proj", "out"),),
    passthrough=True,
    tied=(Member("qkv", "out", 3), Member("proj", "in")),
    heads="num_heads",
)

#: Composite layers by class name (torchvision's Swin V1 and V2).
COMPOSITES: dict[str, CompositeLayer] = {
    "ShiftedWindowAttention": _WINDOW_ATTENTION,
    "ShiftedWindowAttentionV2": _WINDOW_ATTENTION,
    "PatchMerging": CompositeLayer(
        "patch merging (4 strided slices concatenated, normalised, reduced)",
        inputs=(Member("norm", "out", 4), Member("reduction", "in", 4)),
        outputs=(Member("reduction", "out"),),
        root="reduction",
    ),
    "PatchMergingV2": CompositeLayer(
        "patch merging V2 (4 strided slices concatenated, reduced, normalised)",
        inputs=(Member("reduction", "in", 4),),
        outputs=(Member("reduction", "out"), Member("norm", "out")),
        root="reduction",
    ),
}


def register_composite(class_name: str, layer: CompositeLayer) -> None:
    """Treat every module of class ``class_name`` as one node, pruned as ``layer`` says.

    Use it for layers whose ``forward`` uses sub-layer weights functionally or reshapes along
    non-channel axes, when Torch-Pruning's analysis of them fails or runs out of limits.
    """
    COMPOSITES[class_name] = layer


def composite_of(module: Any) -> CompositeLayer | None:
    """The composite-layer description of ``module``'s class, if it has one."""
    return COMPOSITES.get(type(module).__name__) if isinstance(module, nn.Module) else None


def regroup_channels(grad_fn: Any) -> int | None:
    """Channels of a reshape that reads a ``(b, g, c // g, h, w)`` tensor (a channel regrouping).

    Args:
        grad_fn: The reshape's autograd node (``ViewBackward0`` and the like).

    Returns:
        ``g * (c // g)`` for a reshape out of a 5-D tensor, else None.
    """
    sizes = getattr(grad_fn, "_saved_self_sym_sizes", None) or getattr(grad_fn, "_saved_self_sizes", None)
    if sizes is None or len(sizes) != REGROUP_RANK:
        return None
    return int(sizes[1]) * int(sizes[2])


class RegroupOp(nn.Module):
    """A channel regrouping in Torch-Pruning's graph (it replaces the reshape's op node)."""

    def __init__(self, channels: int, op: str) -> None:
        super().__init__()
        self.channels, self.op = channels, op

    def __repr__(self) -> str:
        return f"channel regrouping ({self.op}, {self.channels} channels)"


def cut_inside(module2node: dict[Any, Any], node: Any, entry_fns: Sequence[Any]) -> bool:
    """Replace the traced inside of a composite layer's graph node by edges from what feeds it.

    Tracing walks autograd backwards from a layer's output, so the operations inside a
    composite layer become nodes between it and its inputs. This removes them and links the
    nodes that produced the layer's inputs (``entry_fns``: their autograd nodes, recorded by
    a forward pre-hook) straight to ``node``.

    Returns:
        False (and nothing changed) when an operation inside also feeds another layer.
    """
    by_fn = {n.grad_fn: n for n in module2node.values()}
    entries = list(dict.fromkeys(by_fn[g] for g in entry_fns if g in by_fn))
    inside: set[Any] = set()
    stack = list(node.inputs)
    while stack:
        n = stack.pop()
        if n is node or n in inside or n in entries:
            continue
        inside.add(n)
        stack.extend(n.inputs)
    if any(o is not node and o not in inside for n in inside for o in n.outputs):
        return False
    for n in inside:
        module2node.pop(n.module, None)
    node.inputs = entries
    for e in entries:
        e.outputs = [o for o in e.outputs if o not in inside and o is not node] + [node]
    return True
