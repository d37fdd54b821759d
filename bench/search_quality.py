"""The headline comparison: every strategy, same evaluation budget, same base model, same device.

Base: the zoo ResNet-20 trained once on Fashion-MNIST (``$PRUNEPILOT_DATA``) and cached. Device:
this machine's CPU, latency measured (``--device``, default ``local-cpu-cputime``: process CPU
time, robust to other load). For each budget (fractions of the base latency) and seed, each
strategy runs as a real ``prunepilot search`` (Ray Tune, local, 2 CPUs) with the same number of
evaluations (one-shot strategies: their own phases, wall-clock reported); then the best policy
within the budget is fine-tuned briefly and scored on the test split.

    python bench/search_quality.py --quick          # 1 budget, 2 seeds, 12 evaluations
    python bench/search_quality.py                  # budgets 0.7/0.5/0.3, 3 seeds, 40 evaluations

Writes ``bench/results/<date>/search_quality.json`` and ``search_quality_fronts.png``; the
tables in BENCHMARKS.md are generated from that JSON by ``bench/report.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from prunepilot import __version__
from prunepilot.pruning import TORCH_PRUNING_VERSION, PruningPolicy
from prunepilot.search.config import validate_config
from prunepilot.search.pareto import ACCURACY, LATENCY, best_within_budget, hypervolume, to_minimisation
from prunepilot.search.runner import run_search

CANDIDATE = ["uniform", "random", "optuna-tpe", "optuna-nsga2"]
SESSION = ["amc-ddpg", "autoslim", "metapruning"]


def base_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": "bench-quality",
        "seed": 0,
        "model": {
            "spec": args.model,
            "train": {"epochs": args.epochs, "lr": 0.1, "seed": 0},
            "cache_dir": str(args.cache_dir),
        },
        "data": {
            "name": "fashion-mnist",
            "root": str(args.data_root) if args.data_root else None,
            "batch_size": 128,
            "val_size": 5000,
            "calib_size": 1024,
            "train_subset": args.train_subset,
            "test_subset": args.test_subset,
        },
        "device": {"name": args.device, "batch_size": args.latency_batch},
        "budget": {"fraction": 0.5},
        "evaluation": {"lower_bound": 0.2, "bn_batches": 8, "val_batches": args.val_batches},
        "strategy": {"name": "random", "evaluations": args.evaluations},
        "ray": {"num_cpus": 2, "max_concurrent": 2},
    }


def finetune_and_test(cfg_dict: dict[str, Any], policy: PruningPolicy, args: argparse.Namespace) -> float:
    """Fine-tune the pruned model briefly (same recipe for every strategy); test accuracy."""
    from prunepilot.search.evaluator import get_evaluator
    from prunepilot.training import TrainConfig, evaluate_accuracy, fit

    ev = get_evaluator(validate_config(cfg_dict))
    model = ev.prune(policy)
    recipe = TrainConfig(epochs=1, lr=0.01, schedule="cosine", seed=0, max_batches_per_epoch=args.finetune_batches)
    fit(model, ev.data.train, recipe)
    return float(evaluate_accuracy(model, ev.data.test))


def run_one(args: argparse.Namespace, strategy: str, budget: float, seed: int) -> dict[str, Any]:
    cfg = base_config(args)
    cfg["budget"] = {"fraction": budget}
    cfg["seed"] = seed
    cfg["strategy"] = {"name": strategy, "evaluations": args.evaluations}
    if strategy in SESSION:
        cfg["strategy"]["trials"] = 1
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        result = run_search(validate_config(cfg), Path(tmp) / "run", progress=False)
        wall = time.time() - start
    best = best_within_budget(result.candidates, result.budget_ms)
    ref = [0.0, 1.1 * float(result.base["latency_ms"])]
    hv = hypervolume(to_minimisation(result.front, (ACCURACY, LATENCY)), ref) if result.front else 0.0
    row: dict[str, Any] = {
        "strategy": strategy,
        "budget": budget,
        "seed": seed,
        "budget_ms": result.budget_ms,
        "evaluations": len(result.candidates),
        "wall_s": wall,
        "hypervolume": hv,
        "best_acc": best["metrics"]["accuracy"] if best else None,
        "best_latency_ms": best["metrics"]["latency_ms"] if best else None,
        "latency_kind": best["metrics"]["latency_kind"] if best else None,
        "base": result.base,
        "front": [
            {"accuracy": c["metrics"]["accuracy"], "latency_ms": c["metrics"]["latency_ms"]} for c in result.front
        ],
    }
    if best is not None and args.finetune_batches > 0:
        row["finetuned_test_acc"] = finetune_and_test(cfg, PruningPolicy.model_validate(best["policy"]), args)
    return row


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(r["budget"], r["strategy"]) for r in rows}, key=lambda k: (-k[0], k[1]))
    for budget, strategy in keys:
        rs = [r for r in rows if r["budget"] == budget and r["strategy"] == strategy]
        accs = [r["best_acc"] for r in rs if r["best_acc"] is not None]
        ft = [r["finetuned_test_acc"] for r in rs if r.get("finetuned_test_acc") is not None]
        out.append(
            {
                "budget": budget,
                "strategy": strategy,
                "seeds": len(rs),
                "acc_min": min(accs) if accs else None,
                "acc_median": statistics.median(accs) if accs else None,
                "acc_max": max(accs) if accs else None,
                "hv_median": statistics.median(r["hypervolume"] for r in rs),
                "wall_median_s": statistics.median(r["wall_s"] for r in rs),
                "evals_median": statistics.median(r["evaluations"] for r in rs),
                "ft_median": statistics.median(ft) if ft else None,
                "latency_kind": next((r["latency_kind"] for r in rs if r["latency_kind"]), None),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="budget 0.5 only, 2 seeds, 12 evaluations")
    ap.add_argument("--strategies", default=",".join(CANDIDATE + SESSION))
    ap.add_argument("--budgets", default="0.7,0.5,0.3")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--evaluations", type=int, default=40)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--epochs", type=int, default=5, help="base-model training epochs (cached)")
    ap.add_argument("--train-subset", type=int, default=20000)
    ap.add_argument("--test-subset", type=int, default=5000)
    ap.add_argument("--val-batches", type=int, default=4, help="held-out batches (x512) per candidate")
    ap.add_argument("--finetune-batches", type=int, default=100, help="fine-tune batches for the best policy (0: off)")
    ap.add_argument("--device", default="local-cpu-cputime")
    ap.add_argument("--latency-batch", type=int, default=32)
    ap.add_argument("--data-root", type=Path, default=os.environ.get("PRUNEPILOT_DATA"))
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/prunepilot"))
    ap.add_argument("--out", type=Path, default=Path("bench/results") / datetime.now().strftime("%Y-%m-%d"))
    args = ap.parse_args()
    if args.quick:
        args.budgets, args.seeds, args.evaluations, args.finetune_batches = "0.5", 2, 12, 30
    torch.set_num_threads(1)
    from prunepilot.search.strategies import strategy_names

    known = set(strategy_names())
    strategies = [s for s in args.strategies.split(",") if s in known]
    skipped = [s for s in args.strategies.split(",") if s not in known]
    rows = []
    for budget in (float(b) for b in args.budgets.split(",")):
        for strategy in strategies:
            for seed in range(args.seeds):
                t = time.time()
                rows.append(run_one(args, strategy, budget, seed))
                r = rows[-1]
                print(
                    f"budget {budget:.0%} {strategy:>13} seed {seed}: best acc {r['best_acc']} "
                    f"hv {r['hypervolume']:.4g} ({time.time() - t:.0f} s)",
                    flush=True,
                )
    summary = summarise(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "search_quality",
        "quick": args.quick,
        "rows": rows,
        "summary": summary,
        "skipped_strategies": skipped,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "versions": {
            "prunepilot": __version__,
            "torch": str(torch.__version__),
            "torch_pruning": TORCH_PRUNING_VERSION,
        },
    }
    (args.out / "search_quality.json").write_text(json.dumps(doc, indent=2, default=str))
    try:
        from prunepilot.search.plots import plot_fronts_png

        runs = {
            f"{r['strategy']} {r['budget']:.0%} s{r['seed']}": [
                {
                    "id": str(i),
                    "status": "ok",
                    "strategy": r["strategy"],
                    "metrics": {**p, "latency_kind": r["latency_kind"]},
                }
                for i, p in enumerate(r["front"])
            ]
            for r in rows
            if r["seed"] == 0
        }
        plot_fronts_png(runs, args.out / "search_quality_fronts.png")
    except Exception as exc:  # noqa: BLE001 - the table matters more than the figure
        print(f"(fronts plot skipped: {exc})")
    print(
        f"\n{'budget':>6} {'strategy':>13} {'seeds':>5} {'acc min/med/max':>22} "
        f"{'hv med':>8} {'ft test':>8} {'wall s':>7}"
    )
    for s in summary:
        acc = "-" if s["acc_median"] is None else f"{s['acc_min']:.4f}/{s['acc_median']:.4f}/{s['acc_max']:.4f}"
        ft = "-" if s["ft_median"] is None else f"{s['ft_median']:.4f}"
        print(
            f"{s['budget']:>6.0%} {s['strategy']:>13} {s['seeds']:>5} {acc:>22} {s['hv_median']:>8.4g} {ft:>8} "
            f"{s['wall_median_s']:>7.0f}"
        )
    if skipped:
        print(f"not registered (skipped): {skipped}")


if __name__ == "__main__":
    main()
