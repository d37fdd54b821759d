"""The headline comparison: every strategy, same evaluation budget, same base model, same device.

Base: the zoo ResNet-20 trained once on Fashion-MNIST (``$PRUNEPILOT_DATA``) and cached; a second
model that is not ours, torchvision ``mobilenet_v2`` with its stem adapted to 1x28x28 inputs
(``adapt_stem=true&stem_stride=1``), at ``--second-budgets``. Device: this machine's CPU, latency
measured (``--device``, default ``local-cpu-cputime``: process CPU time, robust to other load).
For each model, budget (fractions of the base latency) and seed, each strategy runs as a real
``prunepilot search`` (Ray Tune on one local Ray started here with 2 CPUs) with the same number
of evaluations. ``uniform`` is a deterministic sweep and runs once. The one-shot strategies
(``autoslim``, ``metapruning``) train one supernet per seed that serves every budget (as in
their papers) and get the *wall-clock* of the random searches that run instead: their training
steps are calibrated once per model from a pilot run (seconds per step, and the fixed part:
Ray, search phase, scoring); the pilot is kept as seed 0 when it is already at the minimum
steps or within 25% of the target, else re-run. Then the best policy
within the budget is fine-tuned briefly (same recipe for every strategy) and scored on the test
split; search-time accuracies are on the held-out split of the training data.

    python bench/search_quality.py --quick          # smoke: ResNet-20 at 50%, 1 seed, 12 evaluations
    python bench/search_quality.py                  # 70/50/30% + mobilenet_v2 at 50%, 3 seeds

Writes ``bench/results/<date>/search_quality.json`` (``--out``) and ``search_quality_fronts.png``;
the JSON carries the table (``quality_table`` of ``bench/sq_tables.py``, the one the script
prints) from which ``bench/report.py`` generates BENCHMARKS.md; the rows and their summary are
``bench/sq_summary.py``'s. This module runs the searches. ``--from-partial`` summarises finished or
interrupted runs' JSON instead of searching; rows from more than one run make a table of their
own (benchmark ``search_quality_combined``, titled "combined from N runs"), shown beside the
newest single run's, never in its place.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.common import dated_results, machine, write_json
from bench.sq_summary import DETERMINISTIC, ONESHOT, combine, failed_rows, result_row, summarise
from bench.sq_tables import plot_fronts, print_table, quality_table
from prunepilot.hw_models.base import runtime_versions
from prunepilot.pruning import PruningPolicy
from prunepilot.search.config import validate_config
from prunepilot.search.pareto import ACCURACY, LATENCY, best_within_budget, hypervolume, to_minimisation
from prunepilot.training import TrainConfig, finetune_and_score

CANDIDATE = ["uniform", "random", "optuna-tpe", "optuna-nsga2"]
SESSION = ["amc-ddpg", "autoslim", "metapruning"]
SECOND_MODEL = "torchvision:mobilenet_v2?adapt_stem=true&stem_stride=1"
#: one-shot searches aim this share of each budget on predicted latency (margin for the fit's error)
ONESHOT_MARGIN = 0.9
#: MetaPruning's band starts at this share of each budget (its evolution's min_budget_use x margin)
ONESHOT_FLOOR = 0.8
#: groups AutoSlim scores per slimming step (drawn at random; the paper scores all)
SLIM_TRIALS = 4
#: a pilot one-shot run within this share of the target wall-clock is kept as seed 0
WALL_TOLERANCE = 0.25


def base_config(args: argparse.Namespace, model: str) -> dict[str, Any]:
    return {
        "name": "bench-quality",
        "seed": 0,
        "model": {
            "spec": model,
            "train": {"epochs": args.epochs, "lr": 0.05, "seed": 0},
            "cache_dir": str(args.cache_dir),
        },
        "data": {
            "name": "fashion-mnist",
            "root": str(args.data_root) if args.data_root else None,
            "batch_size": 128,
            "val_size": 5000,
            "val_subset": args.val_subset,
            "calib_size": 512,
            "train_subset": args.train_subset,
            "test_subset": args.test_subset,
        },
        "device": {"name": args.device, "batch_size": args.latency_batch},
        "budget": {"fraction": 0.5},
        "evaluation": {
            "lower_bound": 0.2,
            "bn_batches": args.bn_batches,
            "uniform_baseline": 0,
        },
        "strategy": {"name": "random", "evaluations": args.evaluations},
        "ray": {"num_cpus": 2, "max_concurrent": 2},
    }


def oneshot_settings(
    strategy: str,
    steps: int,
    checkpoint_dir: Path,
    budgets: list[float],
    budget: float,
    slim_trials: int | None = SLIM_TRIALS,
) -> dict[str, Any]:
    """Sizes of the one-shot methods here: one-batch proxies, ``steps`` training steps.

    One trained supernet serves every budget, as in both papers. Both aim 10% under each budget
    on *predicted* latency (the fit's error on this CPU is about 7%), so their measured points
    land within it: AutoSlim's slimming path runs down to 90% of the smallest budget, and
    MetaPruning's evolution runs once per budget in [0.8, 0.9] x budget (``budget_scales``,
    ``min_budget_use``; the floor is dropped when nothing lies in that band). AutoSlim scores
    ``slim_trials`` groups per slimming step (``--slim-trials``, default ``SLIM_TRIALS``), drawn
    at random, instead of every group: with 25 groups (mobilenet_v2) and about 2 s per proxy
    score here, the paper's full step alone outlasts the random searches it is compared with.
    """
    common = {"checkpoint_dir": str(checkpoint_dir), "bn_batches": 1, "val_batches": 1}
    if strategy == "autoslim":
        return {
            **common,
            "train": {"steps": steps, "batch_size": 64, "lr": 0.02, "random_widths": 1, "checkpoint_every": 100},
            "slim": {"step_fraction": 0.5, "max_trials": slim_trials},
            "stop_fraction": ONESHOT_MARGIN * budget,
        }
    return {
        **common,
        "train": {"steps": steps, "batch_size": 64, "lr": 0.01, "hidden": 16, "checkpoint_every": 100},
        "search": {"population": 8, "parents": 3, "generations": 4, "min_budget_use": ONESHOT_FLOOR / ONESHOT_MARGIN},
        "budget_scales": [ONESHOT_MARGIN * b / budget for b in sorted(budgets, reverse=True)],
        "report_top": 3,
    }


def finetune_and_test(cfg_dict: dict[str, Any], policy: PruningPolicy, args: argparse.Namespace) -> float:
    """Fine-tune the pruned model briefly (same recipe for every strategy); test accuracy."""
    from prunepilot.search.evaluator import get_evaluator

    ev = get_evaluator(validate_config(cfg_dict))
    recipe = TrainConfig(epochs=1, lr=0.01, schedule="cosine", seed=0, max_batches_per_epoch=args.finetune_batches)
    return finetune_and_score(ev.prune(policy), ev.data.train, ev.data.test, recipe).after[0]


def run_one(
    args: argparse.Namespace, model: str, strategy: str, budgets: list[float], seed: int, steps: int | None = None
) -> list[dict[str, Any]]:
    """One real search at the smallest of ``budgets``; one row per budget (best policy within it,
    fine-tuned and tested). Candidate strategies get one budget; one-shot ones get all."""
    budget = min(budgets)
    cfg = base_config(args, model)
    cfg["budget"] = {"fraction": budget}
    cfg["seed"] = seed
    cfg["strategy"] = {"name": strategy, "evaluations": args.evaluations}
    if strategy in SESSION:
        cfg["strategy"]["trials"] = 1
    from prunepilot.search.runner import run_search  # imports Ray: only when a search runs

    with tempfile.TemporaryDirectory() as tmp:
        if strategy in ONESHOT:  # never resume an older run's training: its wall-clock would be free
            cfg["strategy"]["settings"] = oneshot_settings(
                strategy, steps or args.oneshot_steps, Path(tmp) / "ckpt", budgets, budget, args.slim_trials
            )
        start = time.time()
        result = run_search(validate_config(cfg), Path(tmp) / "run", progress=False)
        wall = time.time() - start
    base_ms = result.base.latency_ms
    ref = [0.0, 1.1 * base_ms]
    hv = hypervolume(to_minimisation(result.front, (ACCURACY, LATENCY)), ref) if result.front else 0.0
    train_s = max((float(c.extra.get("train_seconds", 0.0)) for c in result.candidates), default=0.0)
    shared = {  # one search: the same front and figures at every budget it serves
        "evaluations": len(result.candidates),
        "oneshot_steps": cfg["strategy"].get("settings", {}).get("train", {}).get("steps"),
        "train_seconds": train_s if strategy in ONESHOT else None,
        "hypervolume": hv,
        "base": result.base.to_dict(),
        "front": [{"accuracy": c.metrics.accuracy, "latency_ms": c.metrics.latency_ms} for c in result.front],
    }
    rows = []
    for b in sorted(budgets, reverse=True):
        budget_ms = result.budget_ms if b == budget else b * base_ms
        best = best_within_budget(result.candidates, budget_ms)
        found = best.metrics.to_dict() if best else {}
        row = result_row(model, strategy, b, seed, budgets, wall, budget_ms=budget_ms, **shared,
                         best_acc=found.get("accuracy"), best_latency_ms=found.get("latency_ms"),
                         latency_kind=found.get("latency_kind"))  # fmt: skip
        if best is not None and args.finetune_batches > 0:
            row["finetuned_test_acc"] = finetune_and_test(cfg, best.policy, args)
        rows.append(row)
    return rows


def calibrated_steps(pilot: dict[str, Any], target_s: float, min_steps: int) -> int:
    """Training steps that make a one-shot search as long as ``target_s``, from a pilot run.

    The pilot's wall-clock minus its training time is the fixed part (Ray, supernet build, the
    search phase, scoring); the remaining target is spent on steps at the pilot's seconds per step.
    """
    steps, train_s = int(pilot["oneshot_steps"]), float(pilot["train_seconds"] or 0.0)
    if train_s <= 0:
        return steps
    per_step = train_s / steps
    fixed = max(0.0, float(pilot["wall_s"]) - train_s)
    return max(min_steps, int((target_s - fixed) / per_step))


def run_model(
    args: argparse.Namespace,
    model: str,
    budgets: list[float],
    strategies: list[str],
    doc: dict[str, Any],
    save: Callable[[], None] | None = None,
) -> None:
    """Every strategy x budget x seed on one model; rows and calibrations appended to ``doc``.

    Candidate strategies and AMC search each budget separately; a one-shot strategy trains
    once per seed and serves every budget from that run (its rows share wall-clock and front).
    """
    rows: list[dict[str, Any]] = doc["rows"]

    def record(new: list[dict[str, Any]], started: float) -> None:
        rows.extend(new)
        if save is not None:
            save()  # rows so far, after every search
        for row in new:
            print(
                f"{model} budget {row['budget']:.0%} {row['strategy']:>13} seed {row['seed']}: best acc "
                f"{row['best_acc']} hv {row['hypervolume']:.4g} evals {row['evaluations']} "
                f"({time.time() - started:.0f} s)",
                flush=True,
            )

    for budget in budgets:
        for strategy in (s for s in strategies if s not in ONESHOT):
            for seed in range(1 if strategy in DETERMINISTIC else args.seeds):
                t = time.time()
                record(guarded(args, model, strategy, [budget], seed), t)
    for strategy in (s for s in strategies if s in ONESHOT):
        steps = args.oneshot_steps
        for seed in range(args.seeds):
            t = time.time()
            randoms = [r["wall_s"] for r in rows if r["model"] == model and r["strategy"] == "random"]
            if seed > 0 or args.no_calibrate or not randoms:
                record(guarded(args, model, strategy, budgets, seed, steps), t)
                continue
            # the one-shot run serves len(budgets) budgets: match the random searches it replaces
            target = statistics.median(randoms) * len(budgets)
            pilot = guarded(args, model, strategy, budgets, seed, steps)
            if pilot[0].get("error"):
                record(pilot, t)
                continue
            steps = calibrated_steps(pilot[0], target, args.min_oneshot_steps)
            kept = steps == args.oneshot_steps or abs(pilot[0]["wall_s"] - target) <= WALL_TOLERANCE * target
            doc["calibration"].append(
                {
                    "model": model,
                    "strategy": strategy,
                    "target_s": target,
                    "pilot_steps": pilot[0]["oneshot_steps"],
                    "pilot_wall_s": pilot[0]["wall_s"],
                    "pilot_train_s": pilot[0]["train_seconds"],
                    "steps": args.oneshot_steps if kept else steps,
                    "pilot_kept": kept,
                }
            )
            if kept:
                steps = args.oneshot_steps
                record(pilot, t)
            else:
                record(guarded(args, model, strategy, budgets, seed, steps), t)


def guarded(
    args: argparse.Namespace, model: str, strategy: str, budgets: list[float], seed: int, steps: int | None = None
) -> list[dict[str, Any]]:
    """:func:`run_one`, but a search that raises becomes rows with its error (the benchmark goes on).

    E.g. a budget near the lattice's floor: each search measures the base and the lower-bound
    model again, and on this CPU their ratio moves by several points between searches.
    """
    started = time.time()
    try:
        return run_one(args, model, strategy, budgets, seed, steps)
    except Exception as exc:  # noqa: BLE001 - recorded in the row and the table's notes
        print(f"{model} {strategy} seed {seed} FAILED: {type(exc).__name__}: {exc}", flush=True)
        return failed_rows(model, strategy, budgets, seed, exc, time.time() - started)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="ResNet-20 at 50%% only, 1 seed, 12 evaluations")
    ap.add_argument("--strategies", default=",".join(CANDIDATE + SESSION))
    ap.add_argument("--budgets", default="0.7,0.5,0.3", help="budgets of --model (fractions of base latency)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--evaluations", type=int, default=40)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--second-model", default=SECOND_MODEL, help="a model that is not ours ('' to skip)")
    ap.add_argument("--second-budgets", default="0.5", help="budgets of --second-model")
    # the data and base-training settings equal bench/apply.py --quick's, so the two share a cached base
    ap.add_argument("--epochs", type=int, default=3, help="base-model training epochs (cached)")
    ap.add_argument("--train-subset", type=int, default=10000, help="training images (base training, fine-tune)")
    ap.add_argument("--val-subset", type=int, default=1000, help="held-out training images scoring each candidate")
    ap.add_argument("--test-subset", type=int, default=3000, help="test images for the fine-tuned scores")
    ap.add_argument("--bn-batches", type=int, default=4, help="BN-recalibration batches (x128) per candidate")
    ap.add_argument("--finetune-batches", type=int, default=100, help="fine-tune batches for the best policy (0: off)")
    ap.add_argument("--oneshot-steps", type=int, default=50, help="one-shot training steps of the pilot run")
    ap.add_argument(
        "--no-calibrate", action="store_true", help="one-shot strategies keep --oneshot-steps (no wall-clock match)"
    )
    ap.add_argument("--min-oneshot-steps", type=int, default=50, help="floor of the calibrated one-shot steps")
    ap.add_argument(
        "--slim-trials", type=int, default=SLIM_TRIALS, help="groups AutoSlim scores per slimming step (at random)"
    )
    ap.add_argument("--device", default="local-cpu-cputime")
    ap.add_argument("--latency-batch", type=int, default=32)
    ap.add_argument("--data-root", type=Path, default=os.environ.get("PRUNEPILOT_DATA"))
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/prunepilot"))
    ap.add_argument("--out", type=Path, default=dated_results())
    ap.add_argument(
        "--from-partial",
        type=Path,
        nargs="+",
        default=None,
        help="no searches: summarise the rows of these runs' JSON (an interrupted run's search_quality.partial.json, "
        "or finished runs of other models, e.g. one per model) as one table; where two files hold the same model "
        "and strategy, the later file's rows replace the earlier's (a re-run wins)",
    )
    args = ap.parse_args(argv)
    if args.quick:  # a smoke run: one seed, no wall-clock calibration
        args.budgets, args.seeds, args.evaluations, args.finetune_batches = "0.5", 1, 12, 30
        args.second_model, args.oneshot_steps, args.no_calibrate = "", 50, True
    return args


def main() -> None:
    args = parse_args()
    if args.from_partial is not None:
        docs = [json.loads(path.read_text()) for path in args.from_partial]
        finish(combine(args.from_partial, docs), args.out)
        return
    torch.set_num_threads(1)
    import ray

    from prunepilot.search.strategies import strategy_names

    known = set(strategy_names())
    strategies = [s for s in args.strategies.split(",") if s in known]
    skipped = [s for s in args.strategies.split(",") if s not in known]
    plan = [(args.model, [float(b) for b in args.budgets.split(",")])]
    if args.second_model:
        plan.append((args.second_model, [float(b) for b in args.second_budgets.split(",")]))
    doc: dict[str, Any] = {
        "benchmark": "search_quality",
        "quick": args.quick,
        "rows": [],
        "calibration": [],
        "oneshot_sizing": {"margin": ONESHOT_MARGIN, "floor": ONESHOT_FLOOR, "slim_trials": args.slim_trials},
        "skipped_strategies": skipped,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": machine(),
        "versions": runtime_versions(),
    }
    started = time.time()
    partial = args.out / "search_quality.partial.json"
    # one local Ray for every search: its start-up is not charged to each strategy's wall-clock
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)

    def save() -> None:
        write_json(partial, doc, quiet=True)

    try:
        for model, budgets in plan:
            run_model(args, model, budgets, strategies, doc, save)
    finally:
        ray.shutdown()
    doc["total_seconds"] = time.time() - started
    finish(doc, args.out)
    partial.unlink(missing_ok=True)


def finish(doc: dict[str, Any], out: Path) -> None:
    """Summarise, tabulate, write the JSON and the fronts plot, print the table."""
    doc["summary"] = summarise(doc["rows"])
    doc["table"] = quality_table(doc)
    write_json(out / "search_quality.json", doc)
    plot_fronts(doc, out / "search_quality_fronts.png")
    print_table(doc["table"])
    if "total_seconds" in doc:
        print(f"total {doc['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
