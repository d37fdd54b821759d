"""Does every strategy's best policy use the budget it was given, on the measured device? (#15)

Runs the quickstart (``configs/quickstart.yaml``: digits, simplecnn, latency measured on this
CPU at batch 256 with the thread-CPU clock, 50% of the base) once per strategy, as
``prunepilot search configs/quickstart.yaml --strategy NAME`` runs it (Ray, 2 CPUs), and reads
each run's ``run.json``: the best candidate within the budget, judged on its *re-measured*
latency, and ``budget_use`` = measured latency / budget (after the driver's budget fill, on by
default: ``run.json``'s ``fill`` says whether it widened the strategy's best, and the table does
too). Targets (#15): every strategy returns a
best policy within the measured budget with ``budget_use`` >= 0.9; autoslim and metapruning
finish in under 3 minutes.

Writes ``budget_use.json`` (``--out``) with a table for ``bench/report.py``.

    python bench/budget_use.py                       # every strategy, ~15 minutes on 2 cores
    python bench/budget_use.py --strategies random   # one
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.common import args_record, dated_results, machine, machine_note, print_result_table, result_table, write_json
from prunepilot.hw_models.base import runtime_versions

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
STRATEGIES = ("random", "optuna-tpe", "optuna-nsga2", "amc-ddpg", "autoslim", "metapruning")
TARGET_USE = 0.9
TARGET_ONESHOT_S = 180.0
COLUMNS = ["strategy", "candidates", "seconds", "best acc", "predicted ms", "measured ms", "budget ms",
           "budget_use", "within (measured)", "best is the fill", "target met"]  # fmt: skip


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated strategy names")
    ap.add_argument("--config", type=Path, default=QUICKSTART, help="the search config (default: the quickstart)")
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default bench/results/<today>/)")
    return ap.parse_args()


def run_one(config: Path, strategy: str, work: Path) -> dict[str, Any]:
    """One search of ``strategy`` on ``config``, as the CLI runs it; the figures of its run.json."""
    from prunepilot.search.config import load_config
    from prunepilot.search.runner import run_search
    from prunepilot.search.store import RunStore

    cfg = load_config(config, {"strategy.name": strategy})
    t0 = time.perf_counter()
    result = run_search(cfg, work / strategy, progress=False, backend="ray")
    seconds = time.perf_counter() - t0
    info = RunStore(result.run_dir).read_info()
    best = info.get("best_within_budget")
    row: dict[str, Any] = {
        "strategy": strategy,
        "candidates": len(result.candidates),
        "failed_trials": result.failed_trials,
        "seconds": seconds,
        "budget_ms": result.budget_ms,
        "base_ms": result.base.latency_ms,
        "trial_budget_ms": info.get("trial_budget_ms"),
        "margin": (info.get("in_loop_latency") or {}).get("margin"),
        "best": best,
        "fill": info.get("fill"),
    }
    use = best.get("budget_use") if best and best.get("budget_use_of") == "measured" else None
    row["met"] = bool(
        use is not None
        and use <= 1.0 + 1e-9
        and use >= TARGET_USE
        and (strategy not in ("autoslim", "metapruning") or seconds < TARGET_ONESHOT_S)
    )
    return row


def filled(row: dict[str, Any]) -> str:
    """Whether the run's best is the driver's budget fill of the strategy's best ("-": no fill ran;
    results from before the fill have no record of it)."""
    fill, best = row.get("fill"), row.get("best") or {}
    if not fill:
        return "-"
    return "yes" if fill.get("filled") and fill.get("filled") == best.get("id") else "no"


def fill_note(row: dict[str, Any]) -> str | None:
    """Why a fill within the budget did not become the best: it scored lower, or tied (a tie goes
    to the faster policy, which is then the one that uses less of the budget); None otherwise."""
    fill, best = row.get("fill") or {}, row.get("best") or {}
    got, was = fill.get("accuracy"), fill.get("from_accuracy")
    if not fill.get("filled") or fill.get("filled") == best.get("id") or got is None or was is None:
        return None
    use = fill["latency_ms"] / row["budget_ms"] if fill.get("latency_ms") is not None else None
    at = f" (budget_use {use:.3f})" if use is not None else ""
    if got == was:
        return (f"{row['strategy']}: the fill{at} scored {got:.4f}, the same as the strategy's best; a tie goes to "
                "the faster policy, so the best uses less of the budget.")  # fmt: skip
    return f"{row['strategy']}: the fill{at} scored {got:.4f}, under the strategy's best ({was:.4f})."


def budget_table(record: dict[str, Any]) -> dict[str, Any]:
    """The BENCHMARKS.md table for a ``budget_use.json`` record (also what the script prints)."""
    rows = []
    for r in record["rows"]:
        best = r.get("best") or {}
        predicted = best.get("latency_ms") if best.get("latency_kind") == "predicted" else None
        rows.append([r["strategy"], r["candidates"], r["seconds"], best.get("accuracy"), predicted,
                     best.get("measured_latency_ms"), r["budget_ms"], best.get("budget_use"),
                     "yes" if best else "NO", filled(r), "yes" if r["met"] else "NO"])  # fmt: skip
    m = record["machine"]
    why = [fill_note(r) for r in record["rows"]]
    notes = [
        f"{record['args']['config']} per strategy on Ray (2 CPUs): in-loop latency predicted by the predictor "
        "calibrated at search start, every front point and the best within budget re-measured at the end; the "
        "best is the most accurate candidate whose measured latency is within the budget (after the driver's "
        "budget fill, which widens the strategy's best when it uses under 90% of the budget; 'best is the fill' "
        "says whether the widened policy won, '-' that no fill ran).",
        "budget_use = measured latency of that best / budget. Targets: within the measured budget with budget_use "
        f">= {TARGET_USE:g} for every strategy; autoslim and metapruning under {TARGET_ONESHOT_S:.0f} s.",
        *[w for w in why if w],
        machine_note(m["cpu"], m["cores"], m["platform"], record["versions"]),
    ]
    return result_table("Budget use of every strategy's best policy, quickstart (#15)", COLUMNS, rows, notes)


def main() -> None:
    args = parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-budget-use-") as tmp:
        for name in [s.strip() for s in args.strategies.split(",") if s.strip()]:
            print(f"{name} ...", flush=True)
            rows.append(run_one(args.config, name, Path(tmp)))
            best = rows[-1]["best"] or {}
            print(f"  {rows[-1]['seconds']:.0f} s, budget_use {best.get('budget_use')}", flush=True)
    shown = args.config.resolve()
    root = QUICKSTART.parents[1]
    record: dict[str, Any] = {
        "benchmark": "budget_use",
        # the config as the repository names it (a checkout elsewhere holds the same file)
        "args": {**args_record(args), "config": str(shown.relative_to(root) if shown.is_relative_to(root) else shown)},
        "rows": rows,
        "machine": machine(),
        "versions": runtime_versions(),
    }
    out = args.out or dated_results() / "budget_use.json"
    write_json(out, record, quiet=True)
    record["table"] = budget_table(record)
    write_json(out, record)
    print_result_table(record["table"])


if __name__ == "__main__":
    main()
