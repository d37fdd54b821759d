"""Channel selection that needs no Torch-Pruning: criterion names, and which channels to keep.

:data:`IMPORTANCE_CRITERIA` names every criterion (Torch-Pruning's importances and those of
:mod:`prunepilot.pruning.criteria`), :func:`canonical_importance` resolves a name or alias, and
:func:`select_keep` turns one group's scores into the channel indices to keep. The adapter
(:mod:`prunepilot.pruning.adapter`) scores groups and prunes; these are re-exported there.

Example:
    >>> import torch
    >>> canonical_importance("Fisher")
    'hessian'
    >>> select_keep(torch.tensor([0.1, 0.9, 0.5, 0.2]), keep=2, blocks=1)
    [1, 2]
"""

from __future__ import annotations

import torch

from prunepilot.errors import one_of
from prunepilot.pruning import criteria

#: Channel-selection criteria by name, with what they measure.
IMPORTANCE_CRITERIA: dict[str, str] = {
    "l1": "L1 norm of each channel's weights across the group (Li et al. 2017)",
    "l2": "L2 norm of each channel's weights across the group",
    "bn-scale": "|gamma| of the BatchNorm layers in the group (Network Slimming, Liu et al. 2017)",
    "taylor": "first-order Taylor |w * dL/dw| on calibration batches (Molchanov et al. 2019)",
    "hessian": "diagonal Fisher/second-order w^2 * E[g^2] on calibration samples (OBD, LeCun 1989)",
    "random": "uniformly random channels (a control)",
    **criteria.CRITERIA,
}
_ALIASES = {"fisher": "hessian", "obd": "hessian", "slimming": "bn-scale", "magnitude": "l1"}
#: Criteria that need calibration batches.
DATA_DEPENDENT = frozenset({"taylor", "hessian"}) | criteria.DATA_DEPENDENT


def canonical_importance(name: str) -> str:
    """Return the canonical criterion name, or raise listing the valid ones."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in IMPORTANCE_CRITERIA:
        raise ValueError(
            f"unknown importance criterion {name!r}; expected {one_of(IMPORTANCE_CRITERIA)} "
            f"(aliases: {', '.join(sorted(_ALIASES))})"
        )
    return key


def needs_data_message(crit: str) -> str:
    """The error text for a data-dependent criterion ``crit`` given no calibration batches."""
    free = one_of(sorted(set(IMPORTANCE_CRITERIA) - DATA_DEPENDENT))
    need = f"importance {crit!r} needs calibration batches; none were given"
    return f"{need} (pass data, or use a data-free criterion: {free})"


def select_keep(scores: torch.Tensor, keep: int, blocks: int) -> list[int]:
    """Indices of the ``keep`` most important channels, keeping equal offsets in every block.

    With ``blocks > 1`` (grouped convolutions, attention heads) the same within-block offsets
    are kept in every block, so each conv group / head keeps the same, aligned channels.
    """
    total = scores.numel()
    if blocks > 1:
        per = total // blocks
        offsets = torch.topk(scores.view(blocks, per).sum(0), keep // blocks).indices.sort().values
        return sorted(b * per + int(o) for b in range(blocks) for o in offsets)
    return sorted(int(i) for i in torch.topk(scores, keep).indices)
