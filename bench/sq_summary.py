"""``search_quality.json``'s rows and their summary: one row per search and budget, one summary
entry per model, budget and strategy (min/median/max over seeds), and the merging of several
runs' rows into one table (``--from-partial``).

The searches that make the rows are in ``bench/search_quality.py``; the tables drawn from the
summary in ``bench/sq_tables.py``.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from prunepilot.search.front_metrics import budget_hypervolume

#: strategies given random search's wall-clock instead of an evaluation count
ONESHOT = ("autoslim", "metapruning")
#: deterministic: one run, whatever the seed
DETERMINISTIC = ("uniform", "knapsack", "knapsack-sensitivity")
#: what a user would run instead of a search: Torch-Pruning's global pruning (``bench/peers.py``)
PEERS = ("torch-pruning-global", "torch-pruning-isomorphic")
#: the baselines every searched strategy is compared against in the table's notes
BASELINES = ("uniform", "random", *PEERS)
#: hypervolume is compared against random search and "just use Optuna"
HV_BASELINES = ("random", "optuna-tpe")


def result_row(
    model: str, strategy: str, budget: float, seed: int, budgets: list[float], wall_s: float, **fields: Any
) -> dict[str, Any]:
    """One row of ``search_quality.json``: a search's outcome at one budget (``fields`` override the
    defaults, which describe a search with no policy and no front)."""
    return {
        "model": model,
        "strategy": strategy,
        "budget": budget,
        "seed": seed,
        "budget_ms": 0.0,
        "evaluations": 0,
        "wall_s": wall_s,
        "shared_budgets": len(budgets),
        "oneshot_steps": None,
        "train_seconds": None,
        "hypervolume": 0.0,
        "best_acc": None,
        "best_latency_ms": None,
        "latency_kind": None,
        "front": [],
        **fields,
    }


def failed_rows(
    model: str, strategy: str, budgets: list[float], seed: int, error: Exception, wall_s: float
) -> list[dict[str, Any]]:
    """Rows for a search that raised: no policy, no front, the error kept (the table counts the seed)."""
    error_text = f"{type(error).__name__}: {error}"
    return [
        result_row(model, strategy, b, seed, budgets, wall_s, error=error_text) for b in sorted(budgets, reverse=True)
    ]


def _median(values: Any) -> float | None:
    """The median of the values that are not None, or None."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (model, budget, strategy), models in their order, budgets from the largest."""
    out = []
    keys = list(dict.fromkeys((r["model"], r["budget"], r["strategy"]) for r in rows))
    models = list(dict.fromkeys(k[0] for k in keys))
    keys.sort(key=lambda k: (models.index(k[0]), -k[1], k[2]))
    for model, budget, strategy in keys:
        rs = [r for r in rows if (r["model"], r["budget"], r["strategy"]) == (model, budget, strategy)]
        accs = [r["best_acc"] for r in rs if r["best_acc"] is not None]
        ft = [r["finetuned_test_acc"] for r in rs if r.get("finetuned_test_acc") is not None]
        out.append(
            {
                "model": model,
                "budget": budget,
                "strategy": strategy,
                "seeds": len(rs),
                "seeds_within": len(accs),
                "acc_min": min(accs) if accs else None,
                "acc_median": statistics.median(accs) if accs else None,
                "acc_max": max(accs) if accs else None,
                "hv_median": statistics.median(budget_hypervolume(r["front"], r["budget_ms"]) for r in rs),
                "failed": sum(1 for r in rs if r.get("error")),
                "wall_median_s": statistics.median(r["wall_s"] for r in rs),
                "evals_median": statistics.median(r["evaluations"] for r in rs),
                "ft_median": statistics.median(ft) if ft else None,
                "budget_use_median": _median(r.get("budget_use") for r in rs),
                "distinct_median": _median(r.get("distinct_policies") for r in rs),
                "latency_kind": next((r["latency_kind"] for r in rs if r["latency_kind"]), None),
            }
        )
    return out


def is_combined(doc: dict[str, Any]) -> bool:
    """Whether a ``search_quality.json`` document merges rows from more than one run."""
    return len(doc.get("sources", [])) > 1


def combined_sources(paths: list[Path], docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs behind a ``--from-partial`` table; a file that is itself combined lists its own sources."""
    sources: list[dict[str, Any]] = []
    for path, d in zip(paths, docs, strict=True):
        if d.get("sources"):
            sources += d["sources"]
        else:
            sources.append(
                {"file": str(path), "settings": d.get("settings", {}), "oneshot_sizing": d.get("oneshot_sizing")}
            )
    return sources


def merge_rows(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows of several runs as one list; a later run's (model, strategy) replaces an earlier run's rows."""
    merged: list[dict[str, Any]] = []
    for rows in runs:
        redone = {(r["model"], r["strategy"]) for r in rows}
        merged = [r for r in merged if (r["model"], r["strategy"]) not in redone] + list(rows)
    return merged


def combine(paths: list[Path], docs: list[dict[str, Any]]) -> dict[str, Any]:
    """One document from finished or interrupted runs' JSON (``--from-partial``), to summarise again.

    Rows from more than one run make benchmark ``search_quality_combined``: a table of its own,
    shown beside the newest single run's, never in its place.
    """
    doc = {k: v for k, v in docs[0].items() if k not in ("summary", "table", "total_seconds")}
    doc["rows"] = merge_rows([d["rows"] for d in docs])
    doc["calibration"] = [cal for d in docs for cal in d.get("calibration", [])]
    doc["sources"] = combined_sources(paths, docs)
    doc.pop("oneshot_sizing", None)  # per source instead (see quality_table's "Combined" note)
    if is_combined(doc):
        doc["benchmark"] = "search_quality_combined"
    models = list(dict.fromkeys(row["model"] for row in doc["rows"]))
    doc["interrupted"] = any("summary" not in d for d in docs)
    doc["settings"] = {
        **doc.get("settings", {}),
        "model": models[0] if models else "?",
        "second_model": models[1] if len(models) > 1 else doc.get("settings", {}).get("second_model", ""),
    }
    return doc
