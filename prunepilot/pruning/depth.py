"""Depth pruning: which residual blocks of a model can be removed, and removing them.

Width pruning keeps every layer, so the per-layer overhead (kernel launches, memory round trips)
stays; removing a whole residual block removes it. A block is *removable* when replacing it by
``nn.Identity()`` leaves its identity path: its input passes on unchanged, in the same shape.
The rules, by class (subclasses included; a model's own blocks join with :func:`register_block`):

* ``x + f(x)`` blocks, where the Identity is exactly the block with its residual branch zeroed:
  torchvision MobileNetV2 ``InvertedResidual`` with ``use_res_connect`` (and the zoo's
  ``InvertedResidual`` with ``use_residual``), ConvNeXt ``CNBlock``, and ViT ``EncoderBlock``
  (two residual branches, both removed);
* ``relu(x + f(x))`` blocks: torchvision ResNet ``BasicBlock`` and ``Bottleneck`` without
  ``downsample``, RegNet ``ResBottleneckBlock`` with ``proj is None``, and the zoo CIFAR
  ResNets' ``BasicBlock`` with an identity ``shortcut``. The Identity is exact when the block's
  input is already non-negative, as in these models, where the stem and every block end in a
  ReLU; where it can be negative, the Identity passes ``x`` where the zeroed block gives
  ``relu(x)``.

Besides its class rule, a block must keep its shape in the traced forward pass
(:func:`~prunepilot.pruning.cost.trace_calls` records it): every call takes one tensor and
returns one tensor of the same shape. A block that is, contains or lies inside an ignored layer
is not removable.

Example:
    >>> [b.name for b in PruningSpace.build(resnet20(), torch.zeros(1, 3, 32, 32)).blocks][:2]  # doctest: +SKIP
    ['layer1.0', 'layer1.1']
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from prunepilot.errors import PruningError
from prunepilot.pruning.cost import IoShapes, ModuleRecord, layer_at


@dataclass(frozen=True)
class BlockInfo:
    """One removable residual block.

    Attributes:
        name: Module name of the block (``layer1.1``).
        kind: Its class name (``BasicBlock``).
        modules: Names of all modules inside it, in model order.
        macs: MACs per sample of its compute layers, at full width.
        params: Its parameters, at full width.
    """

    name: str
    kind: str
    modules: tuple[str, ...]
    macs: int
    params: int


def _no(attr: str) -> Callable[[nn.Module], bool]:
    return lambda m: getattr(m, attr, None) is None


def _flag(attr: str) -> Callable[[nn.Module], bool]:
    return lambda m: bool(getattr(m, attr, False))


_RULES: dict[str, Callable[[nn.Module], bool]] = {
    "torchvision.models.resnet.BasicBlock": _no("downsample"),
    "torchvision.models.resnet.Bottleneck": _no("downsample"),
    "torchvision.models.mobilenetv2.InvertedResidual": _flag("use_res_connect"),
    "torchvision.models.regnet.ResBottleneckBlock": _no("proj"),
    "torchvision.models.convnext.CNBlock": lambda m: True,
    "torchvision.models.vision_transformer.EncoderBlock": lambda m: True,
    "prunepilot.models._resnet_cifar.BasicBlock": lambda m: isinstance(getattr(m, "shortcut", None), nn.Identity),
    "prunepilot.models._mobilenet.InvertedResidual": _flag("use_residual"),
}
"""Class (``module.qualname``) -> whether an instance's shortcut is the identity."""


def register_block(cls: type[nn.Module] | str, rule: Callable[[nn.Module], bool] | None = None) -> None:
    """Declare a model's own residual block class removable (its instances where ``rule`` holds).

    Only a block whose forward is ``x + f(x)`` (or ``relu(x + f(x))`` on a non-negative input)
    may be registered: removing it passes ``x`` on. The traced-shape check still applies.

    Args:
        cls: The class, or its ``"module.QualName"``.
        rule: Whether an instance's shortcut is the identity (default: always).

    Example:
        >>> register_block(MyResidualBlock, lambda m: m.downsample is None)  # doctest: +SKIP
    """
    key = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
    if "." not in key:
        raise PruningError(f"register_block needs a class or a 'module.QualName' string, got {key!r}")
    _RULES[key] = rule or (lambda m: True)


def inside(name: str, block: str) -> bool:
    """Whether module (or parameter) ``name`` is ``block`` or lies inside it."""
    return name == block or name.startswith(block + ".")


def _rule_holds(module: nn.Module) -> bool:
    for cls in type(module).__mro__:
        rule = _RULES.get(f"{cls.__module__}.{cls.__qualname__}")
        if rule is not None:
            return rule(module)
    return False


def candidate_blocks(model: nn.Module, ignored: Collection[str] = ()) -> list[str]:
    """Names of the modules a class rule says are removable (shapes not yet checked).

    Blocks that are, contain or lie inside a module of ``ignored`` are left out.
    """
    out = []
    for name, module in model.named_modules():
        if not name or not _rule_holds(module):
            continue
        if any(inside(name, i) or inside(i, name) for i in ignored):
            continue
        out.append(name)
    return out


def removable_blocks(
    model: nn.Module, io_shapes: IoShapes, records: Mapping[str, ModuleRecord]
) -> tuple[BlockInfo, ...]:
    """The candidate blocks whose every traced call kept its shape, in forward order.

    Args:
        model: The model.
        io_shapes: Call shapes of the candidates, in order of their first call (from
            :func:`~prunepilot.pruning.cost.trace_calls` with ``watch=candidate_blocks(model)``).
        records: The cost records of the model's modules, by name.
    """
    modules = dict(model.named_modules())
    out = []
    for name, calls in io_shapes.items():
        if any(i is None or i != o for i, o in calls):
            continue
        block = modules[name]
        macs = sum(layer_at(r, {})[0] for n, r in records.items() if inside(n, name))
        inner = tuple(f"{name}.{sub}" for sub, _ in block.named_modules() if sub)
        params = sum(p.numel() for p in block.parameters())
        out.append(BlockInfo(name, type(block).__name__, inner, macs, params))
    return tuple(out)


def remove_blocks(model: nn.Module, names: Sequence[str]) -> None:
    """Replace each named block of ``model`` by ``nn.Identity()``, in place.

    Raises:
        PruningError: a name is not a module of ``model``, or is not an Identity afterwards.
    """
    for name in names:
        parent_name, _, child = name.rpartition(".")
        try:
            if not child:
                raise AttributeError("a block name is a dotted submodule path, not empty")
            model.get_submodule(name)
            parent = model.get_submodule(parent_name)
        except AttributeError as exc:
            raise PruningError(f"cannot remove block {name!r}: it is not a module of this model ({exc})") from exc
        setattr(parent, child, nn.Identity())
    wrong = [n for n in names if not isinstance(model.get_submodule(n), nn.Identity)]
    if wrong:
        raise PruningError(f"blocks {wrong} are not nn.Identity after removal; the model replaces its submodules")
