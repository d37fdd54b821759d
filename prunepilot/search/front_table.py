"""The Pareto front as a table: one row per front candidate, for the CLI, CSV and reports.

Example:
    >>> format_latency({"latency_ms": 4.21, "latency_kind": "predicted", "measured_latency_ms": 4.5})
    '4.21 ms predicted (measured 4.5 ms)'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from prunepilot.search.pareto import budget_latency
from prunepilot.search.records import Candidate, as_wire

__all__ = ["format_latency", "front_table_rows", "mean_keep_ratio"]


def mean_keep_ratio(policy: Mapping[str, Any] | str | None) -> float | None:
    """Mean of channels / full channels over the policy's groups (its keep ratios as fallback)."""
    if isinstance(policy, str):
        policy = json.loads(policy)
    if not isinstance(policy, Mapping):
        return None
    channels, full = policy.get("channels") or {}, policy.get("group_channels") or {}
    fractions = [channels[g] / full[g] for g in channels if full.get(g)]
    if not fractions:
        fractions = [float(r) for r in (policy.get("keep_ratios") or {}).values()]
    return sum(fractions) / len(fractions) if fractions else None


def format_latency(metrics: Mapping[str, Any]) -> str:
    """``"4.21 ms predicted (measured 4.50 ms)"``: the latency, its kind, and a re-measurement."""
    text = f"{float(metrics['latency_ms']):.3g} ms {metrics.get('latency_kind', '?')}"
    measured = metrics.get("measured_latency_ms")
    if measured is not None and metrics.get("latency_kind") != "measured":
        text += f" (measured {float(measured):.3g} ms)"
    return text


def front_table_rows(front: Sequence[Candidate | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per front candidate, in front order, ready for a table or CSV.

    Keys: ``rank`` (1-based), ``id``, ``accuracy``, ``latency_ms``, ``latency_kind``,
    ``measured_latency_ms`` (None unless re-measured), ``budget_latency_ms`` (the figure budgets
    are judged on: the re-measured one when there is one), ``latency`` (formatted with its kind
    and the re-measured figure), ``latency_model``, ``macs``, ``params``, ``strategy``,
    ``trial``, ``mean_keep_ratio``.
    """
    rows = []
    for rank, record in enumerate(front, start=1):
        cand = as_wire(record)
        metrics = cand.get("metrics", {})
        measured = metrics.get("measured_latency_ms")
        rows.append(
            {
                "rank": rank,
                "id": cand.get("id"),
                "accuracy": float(metrics["accuracy"]),
                "latency_ms": float(metrics["latency_ms"]),
                "latency_kind": metrics.get("latency_kind"),
                "measured_latency_ms": None if measured is None else float(measured),
                "budget_latency_ms": budget_latency(cand),
                "latency": format_latency(metrics),
                "latency_model": metrics.get("latency_model"),
                "macs": metrics.get("macs"),
                "params": metrics.get("params"),
                "strategy": cand.get("strategy"),
                "trial": cand.get("trial"),
                "mean_keep_ratio": mean_keep_ratio(cand.get("policy")),
            }
        )
    return rows
