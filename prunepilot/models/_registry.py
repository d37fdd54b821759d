"""Model specs: one string names a model, whether it is ours, torchvision's or the user's.

A spec has one of three forms, each optionally followed by ``?key=value&key2=value2`` query
parameters that are passed to the builder as keyword arguments (values are parsed as int, float,
bool or, failing those, kept as str):

* a zoo name registered with :func:`register_model`: ``resnet20``, ``simplecnn?width_mult=0.5``;
* ``torchvision:NAME``: a torchvision classification model, randomly initialised
  (``weights=None``, never downloads): ``torchvision:vit_b_16?image_size=32``. Two query keys
  belong to prunepilot, not torchvision, and adapt the stem (the model's first ``Conv2d``) to
  small or non-RGB images: ``adapt_stem=true`` rebuilds it for the data's input channels (e.g.
  1 for Fashion-MNIST), ``stem_stride=N`` sets its stride (``stem_stride=1`` for 28x28 inputs):
  ``torchvision:mobilenet_v2?adapt_stem=true&stem_stride=1``;
* ``pkg.module:callable``: user code imported by path, called with ``num_classes=`` and
  ``in_channels=`` only when its signature declares a parameter of that name.

Test fixtures are not zoo models: ``testing:NAME`` builds one of the tiny deterministic models
of :mod:`prunepilot.models.testing` (``testing:tiny-convnet``), imported only when named, so
tests, Ray workers and run folders can name them while :func:`list_models` lists only the zoo.

Where a command needs an example input and none is given, :func:`default_input_shape` decides:
``1x3x224x224`` for ``torchvision:`` models, ``1x3x32x32`` otherwise.

Example:
    >>> from prunepilot.models import build_model
    >>> model = build_model("resnet20", num_classes=10)
    >>> model = build_model("torchvision:resnet18?zero_init_residual=true", num_classes=100)
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

from prunepilot.errors import ModelSpecError, one_of

ModelBuilder = Callable[..., nn.Module]
"""A zoo builder: called as ``builder(num_classes=..., in_channels=..., **query_kwargs)``."""

_BuilderT = TypeVar("_BuilderT", bound=ModelBuilder)

_ZOO: dict[str, ModelBuilder] = {}

TORCHVISION_PREFIX = "torchvision:"
TESTING_PREFIX = "testing:"
_FORMS = (
    "a zoo name (see list_models()), 'torchvision:NAME' (e.g. 'torchvision:resnet18') or an "
    "import path 'pkg.module:callable'; any form may end in '?key=value&key2=value2'"
)


@dataclass(frozen=True)
class ParsedSpec:
    """A model spec split into its parts.

    Attributes:
        spec: The spec string as given.
        kind: ``"zoo"``, ``"torchvision"``, ``"testing"`` or ``"import"``.
        target: The zoo name, the torchvision model name, the test fixture's name, or the
            ``pkg.module:callable`` path.
        kwargs: Keyword arguments from the query part, with parsed values.
    """

    spec: str
    kind: str
    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def register_model(name: str) -> Callable[[_BuilderT], _BuilderT]:
    """Register a model builder under ``name`` in the zoo (decorator).

    The builder must accept ``num_classes`` and ``in_channels`` keyword arguments; any further
    keyword arguments can be set from a spec's query part.

    Args:
        name: Zoo name; must not contain ``:`` or ``?`` and must not be registered already.

    Returns:
        A decorator that registers the builder and returns it unchanged.

    Raises:
        ModelSpecError: If the name is malformed or already taken.
    """
    if not name or ":" in name or "?" in name:
        raise ModelSpecError(f"zoo name {name!r} is invalid: it must be non-empty without ':' or '?'")

    def decorator(builder: _BuilderT) -> _BuilderT:
        if name in _ZOO:
            raise ModelSpecError(f"zoo name {name!r} is already registered to {_ZOO[name]!r}")
        _ZOO[name] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of all registered zoo models, sorted (test fixtures, ``testing:NAME``, are not among them)."""
    return sorted(_ZOO)


def default_input_shape(spec: str, in_channels: int = 3) -> tuple[int, int, int, int]:
    """The example input a command uses for ``spec`` when given no ``--input-shape`` and no data.

    ``(1, in_channels, 224, 224)`` for ``torchvision:`` models (their ImageNet size), else
    ``(1, in_channels, 32, 32)`` (the CIFAR size of the zoo). Every command takes it from here.

    Example:
        >>> default_input_shape("torchvision:resnet18")
        (1, 3, 224, 224)
    """
    size = 224 if parse_spec(spec).kind == "torchvision" else 32
    return (1, int(in_channels), size, size)


def parse_value(text: str) -> int | float | bool | str:
    """Parse one query value: int, then float, then bool (``true``/``false``), else the string."""
    for convert in (int, float):
        try:
            return convert(text)  # type: ignore[no-any-return]
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_spec(spec: str) -> ParsedSpec:
    """Split a model spec into kind, target and query kwargs.

    Args:
        spec: A model spec (see the module docstring).

    Returns:
        The parsed spec.

    Raises:
        ModelSpecError: If the spec is empty or its query part is malformed.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"model spec {spec!r} is empty; use {_FORMS}")
    base, _, query = spec.strip().partition("?")
    kwargs: dict[str, Any] = {}
    if query:
        for item in query.split("&"):
            key, eq, value = item.partition("=")
            if not eq or not key.isidentifier():
                raise ModelSpecError(
                    f"model spec {spec!r}: query item {item!r} is not 'key=value' with a Python identifier as key"
                )
            if key in kwargs:
                raise ModelSpecError(f"model spec {spec!r}: query key {key!r} is given twice")
            kwargs[key] = parse_value(value)
    if base.startswith(TORCHVISION_PREFIX):
        return ParsedSpec(spec, "torchvision", base[len(TORCHVISION_PREFIX) :], kwargs)
    if base.startswith(TESTING_PREFIX):
        return ParsedSpec(spec, "testing", base[len(TESTING_PREFIX) :], kwargs)
    if ":" in base:
        return ParsedSpec(spec, "import", base, kwargs)
    return ParsedSpec(spec, "zoo", base, kwargs)


def build_model(spec: str, *, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Build a model from a spec string.

    Args:
        spec: A zoo name, ``torchvision:NAME`` or ``pkg.module:callable``, each optionally with
            ``?key=value`` query kwargs for the builder.
        num_classes: Number of output classes.
        in_channels: Channels of the input images.

    Returns:
        The model, randomly initialised (deterministic under ``torch.manual_seed``) and in
        training mode.

    Raises:
        ModelSpecError: If the spec does not resolve to a model; the message names the spec and
            the reason.
    """
    parsed = parse_spec(spec)
    if parsed.kind == "torchvision":
        model = _build_torchvision(parsed, num_classes, in_channels)
    elif parsed.kind == "import":
        model = _build_imported(parsed, num_classes, in_channels)
    elif parsed.kind == "testing":
        model = _build_testing(parsed, num_classes, in_channels)
    else:
        model = _build_zoo(parsed, num_classes, in_channels)
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"model spec {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _build_zoo(parsed: ParsedSpec, num_classes: int, in_channels: int) -> nn.Module:
    builder = _ZOO.get(parsed.target)
    if builder is None:
        close = difflib.get_close_matches(parsed.target, list(_ZOO), n=3)
        hint = f" Did you mean {one_of(close)}?" if close else ""
        raise ModelSpecError(
            f"model spec {parsed.spec!r}: {parsed.target!r} is not a zoo model.{hint} Zoo models: "
            f"{one_of(list_models())}. Accepted forms: {_FORMS}."
        )
    return _call_builder(parsed, builder, num_classes, in_channels)


def _call_builder(parsed: ParsedSpec, builder: ModelBuilder, num_classes: int, in_channels: int) -> nn.Module:
    """Call a zoo or fixture builder with the data's classes and channels and the query kwargs."""
    _check_kwargs(parsed, builder, reserved=("num_classes", "in_channels"))
    return _call(parsed, builder, num_classes=num_classes, in_channels=in_channels, **parsed.kwargs)


def _build_testing(parsed: ParsedSpec, num_classes: int, in_channels: int) -> nn.Module:
    from prunepilot.models.testing import FIXTURES  # imported only when a test fixture is named

    builder = FIXTURES.get(parsed.target)
    if builder is None:
        names = [TESTING_PREFIX + name for name in sorted(FIXTURES)]
        raise ModelSpecError(
            f"model spec {parsed.spec!r}: {parsed.target!r} is not a test fixture of prunepilot.models.testing; "
            f"the fixtures are {one_of(names)}. For a production model use a zoo name ({one_of(list_models())}), "
            "'torchvision:NAME' or 'pkg.module:callable'."
        )
    return _call_builder(parsed, builder, num_classes, in_channels)


def _build_torchvision(parsed: ParsedSpec, num_classes: int, in_channels: int) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if parsed.target not in names:
        close = difflib.get_close_matches(parsed.target, names, n=5)
        hint = f"; close names: {one_of(close)}" if close else ""
        raise ModelSpecError(
            f"model spec {parsed.spec!r}: {parsed.target!r} is not a torchvision classification "
            f"model{hint}. See torchvision.models.list_models(module=torchvision.models)."
        )
    kwargs = dict(parsed.kwargs)
    adapt = kwargs.pop("adapt_stem", False)
    stride = kwargs.pop("stem_stride", None)
    if not isinstance(adapt, bool):
        raise ModelSpecError(f"model spec {parsed.spec!r}: adapt_stem={adapt!r} must be true or false")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride < 1):
        raise ModelSpecError(f"model spec {parsed.spec!r}: stem_stride={stride!r} must be an integer >= 1")
    if in_channels != 3 and not adapt:
        raise ModelSpecError(
            f"model spec {parsed.spec!r}: torchvision models take 3 input channels, got "
            f"in_channels={in_channels}. Add '?adapt_stem=true' to rebuild the first convolution for "
            f"{in_channels} channels, or write a builder 'pkg.module:fn' that adapts the stem."
        )
    for key in ("weights", "num_classes"):
        if key in kwargs:
            raise ModelSpecError(
                f"model spec {parsed.spec!r}: {key!r} cannot be set in the query (weights are "
                "always None: prunepilot never downloads; num_classes comes from the data)"
            )
    model = _call(
        parsed,
        torchvision.models.get_model,
        parsed.target,
        weights=None,
        num_classes=num_classes,
        **kwargs,
    )
    if adapt or stride is not None:
        _adapt_stem(parsed, model, in_channels if adapt else None, stride)
    return model


def _adapt_stem(parsed: ParsedSpec, model: nn.Module, in_channels: int | None, stride: int | None) -> None:
    """Replace the model's first ``Conv2d`` by one with ``in_channels`` inputs and/or ``stride``."""
    found = next(((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if found is None:
        raise ModelSpecError(f"model spec {parsed.spec!r}: adapt_stem/stem_stride need a Conv2d stem; none found")
    name, old = found
    if old.groups != 1:
        raise ModelSpecError(
            f"model spec {parsed.spec!r}: the first convolution {name!r} is grouped (groups={old.groups}); "
            "adapt the stem in a builder 'pkg.module:fn' instead"
        )
    new = nn.Conv2d(
        in_channels if in_channels is not None else old.in_channels,
        old.out_channels,
        old.kernel_size,  # type: ignore[arg-type]
        stride=stride if stride is not None else old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        dilation=old.dilation,  # type: ignore[arg-type]
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def _build_imported(parsed: ParsedSpec, num_classes: int, in_channels: int) -> nn.Module:
    module_name, _, attr_path = parsed.target.partition(":")
    if not module_name or not attr_path:
        raise ModelSpecError(f"model spec {parsed.spec!r}: an import path must look like 'pkg.module:callable'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or anything the module raises while importing
        raise ModelSpecError(
            f"model spec {parsed.spec!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            raise ModelSpecError(
                f"model spec {parsed.spec!r}: {getattr(obj, '__name__', obj)!r} has no attribute {attr!r}"
            )
        obj = getattr(obj, attr)
    if not callable(obj):
        raise ModelSpecError(
            f"model spec {parsed.spec!r}: {attr_path!r} is a {type(obj).__name__}, not a callable "
            "that returns an nn.Module"
        )
    params = _parameters(obj)
    extra: dict[str, Any] = {}
    if params is not None and "num_classes" in params:
        extra["num_classes"] = num_classes
    if params is not None and "in_channels" in params:
        extra["in_channels"] = in_channels
    _check_kwargs(parsed, obj, reserved=tuple(extra))
    return _call(parsed, obj, **extra, **parsed.kwargs)


def _parameters(fn: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # some builtins have no signature
        return None


def _check_kwargs(parsed: ParsedSpec, fn: Callable[..., Any], reserved: tuple[str, ...]) -> None:
    for key in reserved:
        if key in parsed.kwargs:
            raise ModelSpecError(
                f"model spec {parsed.spec!r}: {key!r} cannot be set in the query; pass it to "
                "build_model (it comes from the data)"
            )
    params = _parameters(fn)
    if params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [
        name
        for name, p in params.items()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and name not in ("num_classes", "in_channels")
    ]
    for key in parsed.kwargs:
        if key not in accepted:
            raise ModelSpecError(
                f"model spec {parsed.spec!r}: query key {key!r} is not accepted; accepted keys: {one_of(accepted)}"
            )


def _call(parsed: ParsedSpec, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> nn.Module:
    try:
        return fn(*args, **kwargs)  # type: ignore[no-any-return]
    except ModelSpecError as exc:
        if repr(parsed.spec) in str(exc):
            raise
        raise ModelSpecError(f"model spec {parsed.spec!r}: {exc}") from exc
    except Exception as exc:
        raise ModelSpecError(
            f"model spec {parsed.spec!r}: the builder failed with {type(exc).__name__}: {exc}"
        ) from exc
