"""An evaluation cache: a policy seen before is not evaluated again.

Agents revisit the same rounded widths often (near the bounds, or once the policy has
converged); evaluating a candidate costs a pruning, a BN recalibration and an accuracy pass.
The key is the policy's rounded channel counts (:meth:`PruningPolicy.key`) together with its
model signature and channel-selection criterion, which also decide the pruned model.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from prunepilot.pruning import PruningPolicy


class EvaluationCache:
    """Metrics by policy identity, with hit and miss counts.

    Example:
        >>> cache = EvaluationCache()
        >>> cache.get(policy) is None           # doctest: +SKIP
        True
    """

    def __init__(self) -> None:
        self._store: dict[Hashable, dict[str, Any]] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(policy: PruningPolicy) -> Hashable:
        """Identity of the model a policy produces: signature, criterion and rounded widths."""
        return (policy.signature, policy.importance, policy.key())

    def get(self, policy: PruningPolicy) -> dict[str, Any] | None:
        """A copy of the stored metrics for ``policy`` (counts a hit), or None (counts a miss)."""
        found = self._store.get(self.key(policy))
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        return dict(found)

    def put(self, policy: PruningPolicy, metrics: Mapping[str, Any]) -> None:
        """Store the metrics of ``policy``."""
        self._store[self.key(policy)] = dict(metrics)

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, policy: object) -> bool:
        return isinstance(policy, PruningPolicy) and self.key(policy) in self._store
