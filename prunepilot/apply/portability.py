"""Making a policy fit the model it is applied to.

A policy names dependency groups and carries the **signature** of the group structure it was
found on. It applies unchanged to any checkpoint of the same architecture: weights do not enter
the signature, so a policy searched on one checkpoint prunes another one of the same model to
the same widths (the channels kept are chosen on the new weights).

For a *different* variant (a wider or narrower model), ``by_ratio=True`` transfers the
policy's **keep ratios** (the widths it achieved, ``channels / full channels``) and rounds them
on the new model's groups. Groups are matched

1. **by name**, when the new model has exactly the policy's group names (the usual case for a
   width multiplier: same modules, other channel counts); else
2. **by order**, when the new model has as many groups as the policy: the i-th group of the
   policy (model order) gives its ratio to the i-th group of the model.

Anything else is refused with the groups that differ.

The pruning space is traced on a small input when the model allows it (:func:`build_space`):
group structure does not depend on the image size for convolutional classifiers, tracing at
32x32 instead of 224x224 makes applying a policy several times faster, and the signature check
guards the shortcut (on a mismatch the space is traced again at the real size).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunepilot.errors import PolicyError
from prunepilot.pruning import PruningPolicy, PruningSpace

TRACE_SIZE = 32
"""Spatial size of the reduced tracing input (height and width are capped at this)."""


def fit_policy(policy: PruningPolicy, space: PruningSpace, *, by_ratio: bool = False) -> tuple[PruningPolicy, str]:
    """The policy to apply to ``space``'s model, and how it was matched.

    Returns:
        ``(policy, match)`` where ``match`` is ``"signature"`` (the policy as given),
        ``"by-ratio: names"`` or ``"by-ratio: order"`` (a new policy for this model whose
        metadata records the original signature under ``adapted_from``).

    Raises:
        PolicyError: the policy leaves out one of the model's groups or its keep ratios disagree
            with its channels (see :meth:`PruningPolicy.check`); the signatures differ and
            ``by_ratio`` is off (lists the groups that differ, and suggests ``--by-ratio`` when
            it would apply), or ``by_ratio`` cannot match the groups.
    """
    if policy.signature == space.signature:
        policy.check(space)  # every group present, ratios agreeing with channels
        return policy, "signature"
    if not by_ratio:
        try:
            policy.check(space)
        except PolicyError as exc:
            hint = ""
            if _match_by(policy, space) is not None:
                hint = (
                    ". If this model is a wider or narrower variant of the one the policy was found on, "
                    "pass --by-ratio (by_ratio=True) to apply the policy's keep ratios to it"
                )
            raise PolicyError(f"{exc}{hint}") from None
    match = _match_by(policy, space)
    if match is None:
        mine, theirs = list(policy.group_channels), list(space.names)
        only_policy = [n for n in mine if n not in set(theirs)]
        only_model = [n for n in theirs if n not in set(mine)]
        raise PolicyError(
            f"--by-ratio cannot match the policy's {len(mine)} groups to this model's {len(theirs)}: group names "
            f"differ (only in the policy: {only_policy[:10]}; only in the model: {only_model[:10]}) and the counts "
            "differ, so they cannot be matched by order either"
        )
    achieved = {n: policy.channels[n] / policy.group_channels[n] for n in policy.group_channels}
    if match == "names":
        ratios = {n: achieved[n] for n in space.names}
    else:
        ordered = list(policy.group_channels)  # insertion order is model order (from_ratios)
        ratios = {g.name: achieved[ordered[i]] for i, g in enumerate(space.groups)}
    meta = {**policy.metadata, "adapted_from": {"signature": policy.signature, "match": match}}
    adapted = PruningPolicy.from_ratios(
        space, ratios, round_to=policy.round_to, importance=policy.importance, metadata=meta
    )
    return adapted, f"by-ratio: {match}"


def _match_by(policy: PruningPolicy, space: PruningSpace) -> str | None:
    if set(policy.group_channels) == set(space.names):
        return "names"
    if len(policy.group_channels) == len(space.groups):
        return "order"
    return None


def build_space(
    model: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    ignored_layers: Sequence[str] = (),
    signature: str | None = None,
) -> tuple[PruningSpace, torch.Tensor]:
    """The model's pruning space and the example input it was traced with.

    Traces at ``TRACE_SIZE`` when the model classifies such an input into ``num_classes``
    logits and the resulting signature is ``signature`` (the policy's); otherwise at the real
    ``input_shape``. Costs (MACs) of the returned space are at the traced size: measure the
    model at its real input for reports.
    """
    full = torch.zeros(1, *[int(s) for s in input_shape[1:]])
    small = _reduced(full, model, num_classes)
    if small is not None:
        space = PruningSpace.build(model, small, ignored_layers=tuple(ignored_layers))
        if signature is None or space.signature == signature:
            return space, small
    return PruningSpace.build(model, full, ignored_layers=tuple(ignored_layers)), full


def _reduced(full: torch.Tensor, model: nn.Module, num_classes: int) -> torch.Tensor | None:
    if full.dim() != 4 or max(full.shape[2:]) <= TRACE_SIZE:
        return None
    small = torch.zeros(1, full.shape[1], min(full.shape[2], TRACE_SIZE), min(full.shape[3], TRACE_SIZE))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(small)
    except Exception:  # noqa: BLE001 - a model that needs its real input size is traced at it
        return None
    finally:
        model.train(was_training)
    return small if isinstance(out, torch.Tensor) and tuple(out.shape) == (1, num_classes) else None
