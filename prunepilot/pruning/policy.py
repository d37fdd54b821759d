"""Pruning policies: how many channels each dependency group keeps, and which blocks go.

A :class:`PruningPolicy` is plain data (JSON). It is what strategies propose, what crosses
process boundaries, what the results store keeps and what ``prunepilot apply`` reads. Ratios are
**keep** ratios everywhere: 1.0 keeps every channel.

Formats: a width-only policy is written as ``prunepilot.policy/v1`` (without a
``removed_blocks`` key, exactly as before blocks existed); one that also removes residual
blocks (:mod:`prunepilot.pruning.depth`) is written as ``prunepilot.policy/v2`` with a sorted
``removed_blocks`` list. Both are read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from prunepilot.errors import PolicyError
from prunepilot.pruning.adapter import canonical_importance
from prunepilot.pruning.space import PruningSpace

POLICY_FORMAT = "prunepilot.policy/v1"
"""The format of width-only policies (the default)."""
POLICY_FORMAT_V2 = "prunepilot.policy/v2"
"""The format of policies that remove blocks."""
POLICY_FORMATS = (POLICY_FORMAT, POLICY_FORMAT_V2)
"""Every format :meth:`PruningPolicy.from_json` reads."""


def round_width(ratio: float, channels: int, multiple: int, round_to: int = 1) -> int:
    """Channels kept for a keep ``ratio``: rounded to a multiple, at least one block, at most all.

    Widths are multiples of ``lcm(round_to, multiple)``; full width is always allowed. This is
    where ratios become integers, so Torch-Pruning's silent no-op for ratios at or above
    ``1 - 1/C`` can never happen: a tiny ratio keeps one block, not everything.
    """
    if ratio >= 1.0:
        return channels
    step = math.lcm(max(1, round_to), max(1, multiple))
    if step >= channels:
        return channels
    width = int(round(ratio * channels / step)) * step
    return max(step, min(channels, width))


class PruningPolicy(BaseModel):
    """Keep ratio and resulting channel count per dependency group of one model architecture.

    Build with :meth:`from_ratios`, :meth:`uniform`, :meth:`from_widths` or
    :meth:`from_layer_ratios`, remove blocks with :meth:`with_removed_blocks`; read with
    :meth:`load` / :meth:`from_json`.

    Example:
        >>> policy = PruningPolicy.uniform(space, 0.5)      # doctest: +SKIP
        >>> policy = policy.with_removed_blocks(space, ["layer1.1"])  # doctest: +SKIP
        >>> policy.save("policy.json")                       # doctest: +SKIP
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["prunepilot.policy/v1", "prunepilot.policy/v2"] = Field(
        default="prunepilot.policy/v1",
        description="File format and version: v1 without removed blocks, v2 with them (set from removed_blocks).",
    )
    signature: str = Field(description="Hash of the model's group structure the policy was made for.")
    keep_ratios: dict[str, float] = Field(description="Requested keep ratio per group, in (0, 1].")
    channels: dict[str, int] = Field(description="Channels kept per group after rounding.")
    group_channels: dict[str, int] = Field(description="Full channel count per group (for diffs).")
    removed_blocks: tuple[str, ...] = Field(
        default=(), description="Residual blocks replaced by nn.Identity (sorted, unique); v2 only."
    )
    round_to: int = Field(1, ge=1, description="Widths are rounded to multiples of this.")
    importance: str = Field("l1", description="Criterion choosing which channels to keep.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form provenance.")

    @field_validator("removed_blocks")
    @classmethod
    def _sorted_unique(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(names)))

    @model_validator(mode="before")
    @classmethod
    def _format_from_blocks(cls, data: Any) -> Any:
        """A known format follows ``removed_blocks``: v2 with blocks, v1 without (others stay invalid)."""
        if isinstance(data, dict) and data.get("format", POLICY_FORMAT) in POLICY_FORMATS:
            data = {**data, "format": POLICY_FORMAT_V2 if data.get("removed_blocks") else POLICY_FORMAT}
        return data

    @model_serializer(mode="wrap")
    def _drop_empty_blocks(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Width-only policies serialise exactly as v1 files always did: no ``removed_blocks`` key."""
        data: dict[str, Any] = handler(self)
        if not self.removed_blocks:
            data.pop("removed_blocks", None)
        return data

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def from_ratios(
        cls,
        space: PruningSpace,
        ratios: Mapping[str, float] | Sequence[float],
        *,
        round_to: int = 1,
        importance: str = "l1",
        metadata: Mapping[str, Any] | None = None,
    ) -> PruningPolicy:
        """A policy from keep ratios per group (a mapping by name, or a sequence in group order).

        Groups a mapping leaves out keep ratio 1.0.

        Raises:
            PolicyError: unknown group name, wrong sequence length, or a ratio outside (0, 1].
        """
        if isinstance(ratios, Mapping):
            unknown = sorted(set(ratios) - set(space.names))
            if unknown:
                raise PolicyError(f"unknown groups {unknown}; this model's groups are {list(space.names)}")
            by_name = {g.name: float(ratios.get(g.name, 1.0)) for g in space.groups}
        else:
            values = list(ratios)
            if len(values) != len(space.groups):
                raise PolicyError(
                    f"got {len(values)} ratios for a model with {len(space.groups)} groups; give one per group"
                )
            by_name = {g.name: float(v) for g, v in zip(space.groups, values, strict=True)}
        for name, r in by_name.items():
            if not (0.0 < r <= 1.0) or math.isnan(r):
                raise PolicyError(f"keep ratio {r!r} for group {name!r} is outside (0, 1]")
        if round_to < 1:
            raise PolicyError(f"round_to must be a positive integer, got {round_to!r}")
        channels = {g.name: round_width(by_name[g.name], g.channels, g.multiple, round_to) for g in space.groups}
        return cls(
            signature=space.signature,
            keep_ratios=by_name,
            channels=channels,
            group_channels=space.full_widths(),
            round_to=round_to,
            importance=_criterion(importance),
            metadata=dict(metadata or {}),
        )

    @classmethod
    def uniform(cls, space: PruningSpace, ratio: float, **kwargs: Any) -> PruningPolicy:
        """Every group keeps the same ratio (the baseline every front is compared with)."""
        return cls.from_ratios(space, [ratio] * len(space.groups), **kwargs)

    @classmethod
    def from_widths(cls, space: PruningSpace, widths: Mapping[str, int], **kwargs: Any) -> PruningPolicy:
        """A policy from channel counts per group (rounded like ratios)."""
        ratios = {}
        for name, w in widths.items():
            g = space.group(name)
            if not 1 <= int(w) <= g.channels:
                raise PolicyError(f"width {w!r} for group {name!r} is outside [1, {g.channels}]")
            ratios[name] = int(w) / g.channels
        return cls.from_ratios(space, ratios, **kwargs)

    @classmethod
    def from_layer_ratios(cls, space: PruningSpace, layer_ratios: Mapping[str, float], **kwargs: Any) -> PruningPolicy:
        """A policy from per-*layer* keep ratios, as other tools express them.

        Coupled layers must agree: Torch-Pruning would silently give all layers of a group
        one ratio, so disagreeing ratios inside a group are an error here.
        """
        owner = space.module_group()
        per_group: dict[str, dict[str, float]] = {}
        for layer, r in layer_ratios.items():
            if layer not in owner:
                raise PolicyError(
                    f"layer {layer!r} is not in any prunable group; prunable layers include {sorted(owner)[:10]}"
                )
            per_group.setdefault(owner[layer], {})[layer] = float(r)
        for group, layers in per_group.items():
            if len(set(layers.values())) > 1:
                raise PolicyError(
                    f"layers {layers} are coupled in group {group!r} and must keep one channel "
                    "count; give them the same ratio (or give the group one ratio)"
                )
        return cls.from_ratios(space, {g: next(iter(v.values())) for g, v in per_group.items()}, **kwargs)

    def with_removed_blocks(self, space: PruningSpace, names: Sequence[str]) -> PruningPolicy:
        """A copy of this policy that also replaces the blocks ``names`` by ``nn.Identity()``.

        ``names`` replaces any blocks this policy removed already; ``()`` gives the width-only
        policy back. The widths stay as they are.

        Raises:
            PolicyError: the policy was not made for ``space``, or a name is not one of
                ``space.blocks`` (the message names it and some valid ones).
        """
        if isinstance(names, str):
            raise PolicyError(f"removed blocks must be a sequence of block names, got the string {names!r}")
        data = {**self.model_dump(), "removed_blocks": tuple(names)}
        policy = type(self).model_validate(data)
        policy.check(space)
        return policy

    # --- checks ----------------------------------------------------------------------------
    def check(self, space: PruningSpace) -> None:
        """Raise :class:`PolicyError` unless this policy was made for ``space``'s architecture.

        The message lists the groups that differ (missing, extra, or of another width). With a
        matching signature, every group of the model must be in ``channels`` and
        ``keep_ratios``, and each keep ratio must round to its channel count (see
        :meth:`check_agreement`): a group left out would otherwise stay at full width without a
        word, and ratios that say another width than the channels would be ignored silently.
        Every name in ``removed_blocks`` must be one of ``space.blocks``.
        """
        if self.signature == space.signature:
            _check_complete(self, space.full_widths(), source="policy", whose="the model's groups")
            self.check_agreement(space)
            for name in self.removed_blocks:
                space.block(name)  # raises naming the bad name and some valid ones
            return
        mine, theirs = self.group_channels, space.full_widths()
        diffs = [f"{n}: only in the policy ({mine[n]} ch)" for n in sorted(set(mine) - set(theirs))]
        diffs += [f"{n}: only in the model ({theirs[n]} ch)" for n in sorted(set(theirs) - set(mine))]
        diffs += [
            f"{n}: policy {mine[n]} ch, model {theirs[n]} ch"
            for n in sorted(set(mine) & set(theirs))
            if mine[n] != theirs[n]
        ]
        detail = "; ".join(diffs[:20]) or "group structure differs (same names and widths, other coupling)"
        more = f" (+{len(diffs) - 20} more)" if len(diffs) > 20 else ""
        raise PolicyError(
            f"policy signature {self.signature} does not match the model's {space.signature}: {detail}{more}"
        )

    def check_agreement(self, space: PruningSpace) -> None:
        """Raise :class:`PolicyError` for a group whose keep ratio does not round to its channels.

        A ratio agrees with a channel count when rounding it the way :meth:`from_ratios` does
        gives that count, or when the count is one of the two widths on the rounding grid
        (multiples of ``lcm(round_to, group multiple)``) next to ``ratio * full channels``.
        """
        bad = []
        for g in space.groups:
            ratio, width = self.keep_ratios[g.name], self.channels[g.name]
            step = math.lcm(self.round_to, max(1, g.multiple))
            if width != round_width(ratio, g.channels, g.multiple, self.round_to) and not (
                abs(width - ratio * g.channels) < step
            ):
                bad.append(
                    f"{g.name!r}: keep_ratios {ratio!r} (= {ratio * g.channels:.1f} of {g.channels} channels, "
                    f"rounds to {round_width(ratio, g.channels, g.multiple, self.round_to)}) but channels {width}"
                )
        if bad:
            more = f" (+{len(bad) - 10} more)" if len(bad) > 10 else ""
            raise PolicyError(
                f"policy keep_ratios and channels disagree for {len(bad)} group(s): {'; '.join(bad[:10])}{more}. "
                "Make them agree: a group's keep ratio is its channels divided by its group_channels (or "
                "rebuild the policy with PruningPolicy.from_ratios / from_widths)"
            )

    def widths(self) -> dict[str, int]:
        """Channels kept per group (a copy)."""
        return dict(self.channels)

    def mean_keep(self) -> float:
        """Mean of the keep ratios actually achieved (channels / full channels)."""
        fr = [self.channels[n] / self.group_channels[n] for n in self.channels]
        return sum(fr) / max(1, len(fr))

    def key(self) -> tuple[int | str, ...]:
        """Hashable identity of the rounded widths and removed blocks (for evaluation caches).

        A width-only policy's key is its widths alone, as before blocks existed.
        """
        return (*(self.channels[n] for n in sorted(self.channels)), *self.removed_blocks)

    # --- serialisation -----------------------------------------------------------------------
    def to_json(self, indent: int | None = 2) -> str:
        """The policy as JSON text (``prunepilot.policy/v1`` unless it removes blocks, then v2)."""
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str, source: str = "policy JSON") -> PruningPolicy:
        """Parse and validate; raises :class:`PolicyError` naming the bad field."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{source} is not valid JSON: {exc}") from exc
        if isinstance(data, dict):
            found = data.get("format", POLICY_FORMAT)
            if found not in POLICY_FORMATS:
                raise PolicyError(
                    f"{source} has format {found!r}; expected {POLICY_FORMAT!r} (widths only) or "
                    f"{POLICY_FORMAT_V2!r} (widths and removed blocks)"
                )
            if found == POLICY_FORMAT and data.get("removed_blocks"):
                raise PolicyError(
                    f"{source} has format {POLICY_FORMAT!r} but lists removed_blocks; a policy that removes "
                    f"blocks is format {POLICY_FORMAT_V2!r}: set 'format' to it"
                )
        try:
            policy = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise PolicyError(f"{source}: field {where!r}: {first['msg']}") from exc
        _check_complete(policy, policy.group_channels, source=source, whose="the policy's groups (group_channels)")
        for name, r in policy.keep_ratios.items():
            if not 0.0 < r <= 1.0:
                raise PolicyError(f"{source}: keep ratio {r!r} for group {name!r} is outside (0, 1]")
        for name, c in policy.channels.items():
            full = policy.group_channels[name]
            if not 1 <= c <= full:
                raise PolicyError(f"{source}: channels {c!r} for group {name!r} outside [1, {full}]")
        try:
            importance = canonical_importance(policy.importance)
        except ValueError as exc:
            raise PolicyError(f"{source}: field 'importance': {exc}") from None
        return policy.model_copy(update={"importance": importance}) if importance != policy.importance else policy

    def save(self, path: str | Path) -> Path:
        """Write the policy as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> PruningPolicy:
        """Read a policy file; raises :class:`PolicyError` for a missing or invalid file."""
        path = Path(path)
        if not path.is_file():
            raise PolicyError(f"policy file {str(path)!r} does not exist")
        return cls.from_json(path.read_text(), source=str(path))


def _check_complete(policy: PruningPolicy, groups: Mapping[str, int], *, source: str, whose: str) -> None:
    """Raise unless ``channels`` and ``keep_ratios`` name exactly the groups in ``groups`` (``whose``)."""
    listed = list(groups)
    shown = f"{listed[:20]}" + (f" (+{len(listed) - 20} more)" if len(listed) > 20 else "")
    for field in ("channels", "keep_ratios"):
        given = getattr(policy, field)
        missing = [n for n in listed if n not in given]
        extra = sorted(set(given) - set(groups))
        if missing:
            full = {n: groups[n] for n in missing[:3]}
            fill = full if field == "channels" else dict.fromkeys(missing[:3], 1.0)
            raise PolicyError(
                f"{source}: {field} has no entry for group(s) {missing[:20]}; every one of {whose} needs one "
                f"({shown}). To keep a group at full width, add it explicitly, e.g. {fill}"
            )
        if extra:
            raise PolicyError(f"{source}: {field} names group(s) {extra[:20]} that are not among {whose} ({shown})")


def _criterion(name: str) -> str:
    try:
        return canonical_importance(name)
    except ValueError as exc:
        raise PolicyError(str(exc)) from exc
