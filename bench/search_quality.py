"""The headline comparison: every strategy, same evaluation budget, same base model, same device.

Base: the zoo ResNet-20 trained once on Fashion-MNIST (``$PRUNEPILOT_DATA``) and cached. Device:
this machine's CPU, latency measured (``--device``, default ``local-cpu-cputime``: process CPU
time, robust to other load). For each budget (fractions of the base latency) and seed, each
strategy runs as a real ``prunepilot search`` (Ray Tune, local, 2 CPUs) with the same number of
evaluations (one-shot strategies: their own phases, wall-clock reported); then the best policy
within the budget is fine-tuned briefly and scored on the test split.

    python bench/search_quality.py --quick          # 1 budget, 2 seeds, 12 evaluations
    python bench/search_quality.py                  # budgets 0.7/0.5/0.3, 3 seeds, 40 evaluations

Writes ``bench/results/<date>/search_quality.json`` (``--out``) and ``search_quality_fronts.png``;
the JSON carries the table (:func:`quality_table`, the one the script prints) from which
``bench/report.py`` generates BENCHMARKS.md.
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
from prunepilot.hw_models.measure import cpu_name
from prunepilot.pruning import TORCH_PRUNING_VERSION, PruningPolicy
from prunepilot.search.config import validate_config
from prunepilot.search.pareto import ACCURACY, LATENCY, best_within_budget, hypervolume, to_minimisation

CANDIDATE = ["uniform", "random", "optuna-tpe", "optuna-nsga2"]
SESSION = ["amc-ddpg", "autoslim", "metapruning"]
#: the baselines every searched strategy is compared against in the table's notes
BASELINES = ("uniform", "random")
#: hypervolume is compared against random search and "just use Optuna"
HV_BASELINES = ("random", "optuna-tpe")
COLUMNS = [
    "budget (x base latency)",
    "strategy",
    "seeds",
    "evaluations (median)",
    "best acc min",
    "best acc median",
    "best acc max",
    "hypervolume median",
    "fine-tuned test acc median",
    "wall s median",
    "latency",
]


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
    from prunepilot.search.runner import run_search  # imports Ray: only when a search runs

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


def summary_row(s: dict[str, Any]) -> list[Any]:
    """One table row from one ``summary`` entry (the JSON's own numbers, unformatted)."""
    return [
        s["budget"],
        s["strategy"],
        s["seeds"],
        s["evals_median"],
        s["acc_min"],
        s["acc_median"],
        s["acc_max"],
        s["hv_median"],
        s["ft_median"],
        s["wall_median_s"],
        s["latency_kind"],
    ]


def compare(at: dict[str, dict[str, Any]], key: str, refs: tuple[str, ...], relative: bool = False) -> str:
    """Each of ``refs`` against the best searched strategy other than itself (by ``key``), said plainly.

    Searched strategies are all but uniform and random. Differences are in accuracy points (x100),
    or in percent of the reference if ``relative``.
    """
    parts = []
    for ref in refs:
        scored = {k: v[key] for k, v in at.items() if k not in (*BASELINES, ref) and v[key] is not None}
        value = at[ref][key] if ref in at else None
        if ref not in at or value is None:
            parts.append(f"{ref} {'not run' if ref not in at else 'has no figure'}")
            continue
        if not scored:
            parts.append(f"no other searched strategy to compare with {ref}")
            continue
        best = max(scored, key=lambda k: scored[k])
        if relative:
            diff, unit = (100.0 * (scored[best] - value) / value if value else float("inf")), "%"
        else:
            diff, unit = 100.0 * (scored[best] - value), " points"
        verdict = "beats" if scored[best] > value else "does NOT beat"
        parts.append(f"{best} {scored[best]:.4g} vs {ref} {value:.4g}: {diff:+.2f}{unit} ({verdict} {ref})")
    return "; ".join(parts) + "."


def comparison_notes(summary: list[dict[str, Any]]) -> list[str]:
    """Per budget: where the searched strategies beat uniform and random, and where they do NOT."""
    notes = []
    for budget in sorted({s["budget"] for s in summary}, reverse=True):
        at = {s["strategy"]: s for s in summary if s["budget"] == budget}
        notes.append(
            f"At {budget:.0%}, best accuracy within budget (median over seeds, BN-recalibrated, no fine-tune), best "
            "searched strategy: "
            + compare(at, "acc_median", BASELINES)
        )
        if any(s["ft_median"] is not None for s in at.values()):
            notes.append(
                f"At {budget:.0%}, test accuracy after the fixed short fine-tune (median over seeds), best searched "
                "strategy: "
                + compare(at, "ft_median", BASELINES)
            )
        notes.append(
            f"At {budget:.0%}, hypervolume of the front (median over seeds), best searched strategy: "
            + compare(at, "hv_median", HV_BASELINES, relative=True)
        )
    return notes


def machine_note(cpu: Any, cores: Any, plat: Any, versions: dict[str, Any], extra: str = "") -> str:
    """``Machine (shared): ... Versions: ...`` from what the JSON recorded (unrecorded parts left out)."""
    machine = ", ".join(str(x) for x in (cpu, f"{cores} cores" if cores else None, plat) if x)
    listed = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform")
    return f"Machine (shared): {machine or 'not recorded'}{extra}. Versions: {listed}."


def quality_table(doc: dict[str, Any]) -> dict[str, Any]:
    """The BENCHMARKS.md table for one ``search_quality.json`` document (also what the script prints)."""
    settings = doc.get("settings", {})
    machine = doc.get("machine", {})
    versions = doc.get("versions", {})
    summary = doc["summary"]
    kinds = sorted({s["latency_kind"] for s in summary if s["latency_kind"]})
    notes = []
    base = doc["rows"][0]["base"] if doc.get("rows") else None
    if base is not None:
        notes.append(
            f"Base {settings.get('model', '?')}: held-out accuracy {base['accuracy']:.4f}, latency "
            f"{base['latency_ms']:.3f} ms ({base.get('latency_kind', '?')}); budgets are fractions of that latency."
        )
    notes += [
        f"Seeds: {settings.get('seeds', '?')} per strategy and budget (min/median/max over seeds); evaluation "
        f"budget: {settings.get('evaluations', '?')} evaluations per search (one-shot strategies: their own phases, "
        f"wall-clock reported); fine-tune: {settings.get('finetune_batches', '?')} batches, same recipe for every "
        "strategy, scored on the test split"
        + (" (quick run: subsets and budgets reduced)." if doc.get("quick") else "."),
        f"Latency: {' and '.join(kinds) or 'none recorded'} on device {settings.get('device', '?')} at batch "
        f"{settings.get('latency_batch', '?')}.",
        machine_note(machine.get("cpu"), machine.get("cores"), machine.get("platform"), versions),
    ]
    if doc.get("skipped_strategies"):
        notes.append(f"Not registered yet (not run): {', '.join(doc['skipped_strategies'])}.")
    notes += comparison_notes(summary)
    return {
        "title": f"Search quality: {settings.get('model', '?')} on Fashion-MNIST, every strategy at equal evaluations"
        + (" (quick)" if doc.get("quick") else ""),
        "columns": COLUMNS,
        "rows": [summary_row(s) for s in summary],
        "notes": notes,
    }


def print_table(table: dict[str, Any]) -> None:
    print(f"\n{table['title']}")
    print(
        f"{'budget':>6} {'strategy':>13} {'seeds':>5} {'evals':>5} {'acc min/med/max':>22} "
        f"{'hv med':>8} {'ft test':>8} {'wall s':>7} latency"
    )
    for budget, strategy, seeds, evals, lo, med, hi, hv, ft, wall, kind in table["rows"]:
        acc = "-" if med is None else f"{lo:.4f}/{med:.4f}/{hi:.4f}"
        ft_text = "-" if ft is None else f"{ft:.4f}"
        print(
            f"{budget:>6.0%} {strategy:>13} {seeds:>5} {evals:>5.0f} {acc:>22} {hv:>8.4g} {ft_text:>8} {wall:>7.0f} "
            f"{kind or '-'}"
        )
    for note in table["notes"]:
        print(f"- {note}")


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
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": {
            "prunepilot": __version__,
            "torch": str(torch.__version__),
            "torch_pruning": TORCH_PRUNING_VERSION,
        },
    }
    doc["table"] = quality_table(doc)
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
    print_table(doc["table"])


if __name__ == "__main__":
    main()
