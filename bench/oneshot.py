"""One-shot search vs baselines on Fashion-MNIST ResNet-20 at 50% and 30% of base latency.

For each budget: the most accurate candidate within budget (held-out split of the *training*
data, scored by ``evaluator.evaluate``: the base model pruned by ``apply_policy``, BN
recalibrated) from

* ``autoslim``    -- slimmable supernet training + one greedy slimming path (covers both budgets);
* ``metapruning`` -- PruningNet training + one evolutionary search per budget;
* ``uniform``     -- the widest uniform keep ratio within budget (one candidate: nothing to search);
* ``random``      -- random keep ratios projected into the budget, for the same wall-clock as the
  slower one-shot method (total for both budgets, split equally between them);
* ``autoslim*`` / ``metapruning*`` -- the same policies, fine-tuned from the method's own weights
  (the trained slimmable supernet / the PruningNet's generated weights, exported) instead;

then the **same short fine-tune** of each chosen policy (the base model pruned by ``apply_policy``,
BN recalibrated, then SGD: see ``--ft-*``), and top-1 on the **test** split. Latency is the
predicted roofline of the ``x86-avx2-core`` profile at batch 32 (deterministic; measured CPU
latency on a shared 2-core machine is too noisy to compare policies 1% apart).

    # --quick: ~6 min on 2 idle cores (~8x that on a busy shared machine)
    PRUNEPILOT_DATA=../shared/data .venv/bin/python bench/oneshot.py --quick
    PRUNEPILOT_DATA=../shared/data .venv/bin/python bench/oneshot.py           # a few hours
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.common import RESULTS, args_record, print_result_table, result_table, stamp, write_json
from bench.inprocess import Record, best_record, random_search, run_strategy, uniform_record
from prunepilot.search.config import validate_config
from prunepilot.search.evaluator import Evaluator, Metrics, get_evaluator
from prunepilot.training import FinetuneScore, TrainConfig, evaluate_accuracy, finetune_and_score

BUDGETS = (0.5, 0.3)
ONESHOT = ("autoslim", "metapruning")
METHODS = ("uniform", "random", *ONESHOT)
COLUMNS = ["budget", "method", "val acc", "latency ms", "latency / base", "MMACs", "mean keep", "test pruned",
           "test +FT", "FT sd", "in budget / candidates"]  # fmt: skip
Found = dict[str, dict[float, list[Record]]]
"""Every method's candidates per budget (a one-shot method's serve every budget)."""


def settings(quick: bool) -> dict[str, Any]:
    """Sizes of everything: quick (a smoke run of ~half an hour) or full."""
    if quick:
        return {
            "train_subset": 8000,
            "val_subset": 1000,
            "test_subset": 5000,
            "base_epochs": 3,
            "autoslim": {
                "train": {"steps": 100, "batch_size": 64, "lr": 0.02, "random_widths": 1, "checkpoint_every": 50},
                "slim": {"step_fraction": 0.25},
                "stop_fraction": min(BUDGETS),
                "bn_batches": 1,
                "val_batches": 1,
            },
            "metapruning": {
                "train": {"steps": 100, "batch_size": 64, "lr": 0.01, "hidden": 16, "checkpoint_every": 50},
                "search": {"population": 8, "parents": 3, "generations": 4, "min_budget_use": 0.9},
                "budget_scales": [b / BUDGETS[0] for b in BUDGETS],
                "report_top": 2,
                "bn_batches": 1,
                "val_batches": 1,
            },
            "ft_batches": 40,
        }
    return {
        "train_subset": 30000,
        "val_subset": 5000,
        "test_subset": None,
        "base_epochs": 10,
        "autoslim": {
            "train": {"steps": 1500, "batch_size": 128, "lr": 0.02, "random_widths": 2},
            "slim": {"step_fraction": 0.1},
            "stop_fraction": min(BUDGETS),
            "bn_batches": 4,
            "val_batches": 4,
        },
        "metapruning": {
            "train": {"steps": 1500, "batch_size": 128, "lr": 0.01, "hidden": 32},
            "search": {"population": 32, "parents": 8, "generations": 12, "min_budget_use": 0.9},
            "budget_scales": [b / BUDGETS[0] for b in BUDGETS],
            "report_top": 5,
            "bn_batches": 4,
            "val_batches": 4,
        },
        "ft_batches": None,
    }


def search_config(args: argparse.Namespace, s: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "bench-oneshot",
        "seed": args.seed,
        "model": {
            "spec": "resnet20",
            "train": {"epochs": s["base_epochs"], "lr": 0.1, "seed": args.seed},
            "cache_dir": str(args.cache_dir),
        },
        "data": {
            "name": "fashion-mnist",
            "root": args.data_root,
            "batch_size": 64,
            "eval_batch_size": 250,
            "val_size": 5000,
            "val_subset": s["val_subset"],
            "calib_size": 512,
            "train_subset": s["train_subset"],
            "test_subset": s["test_subset"],
            "seed": args.seed,
        },
        "device": {"name": "x86-avx2-core", "batch_size": 32},
        "budget": {"fraction": BUDGETS[0]},
        "evaluation": {"importance": "l1", "lower_bound": 0.2, "bn_batches": 4},
        "strategy": {"name": "random"},
    }


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small data, short training: a smoke run")
    ap.add_argument("--data-root", default=os.environ.get("PRUNEPILOT_DATA"), help="Fashion-MNIST root")
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/prunepilot"), help="base-model cache")
    ap.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="one-shot training checkpoints (default: a fresh temporary folder, so training is timed)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ft-lr", type=float, default=0.02, help="fine-tune learning rate (SGD, cosine)")
    ap.add_argument("--ft-epochs", type=int, default=1, help="fine-tune epochs")
    ap.add_argument("--ft-seeds", type=int, default=3, help="fine-tunes per policy (batch orders); the mean is shown")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if not args.data_root:
        raise SystemExit("set PRUNEPILOT_DATA or --data-root to the folder holding FashionMNIST/raw")
    return args


def search(
    ev: Evaluator, args: argparse.Namespace, s: dict[str, Any], ckpt: Path, phases: dict[str, float]
) -> tuple[Found, float]:
    """Both one-shot methods once (for every budget), then per budget uniform and random search for
    the slower method's wall-clock share; times each phase into ``phases``. Returns the candidates
    and random search's seconds per budget."""
    budgets = {f: f * ev.base_metrics().latency_ms for f in BUDGETS}
    found: Found = {}
    wall: dict[str, float] = {}
    for name in ONESHOT:
        t = time.perf_counter()
        records = run_strategy(ev, name, {**s[name], "checkpoint_dir": str(ckpt)}, budgets[BUDGETS[0]], args.seed)
        wall[name] = time.perf_counter() - t
        extra = records[0][2]
        phases[f"{name}: training"] = extra["train_seconds"]
        if name == "autoslim":
            phases["autoslim: greedy slimming (supernet scores)"] = extra["search_seconds"]
        else:
            searches = {r[2]["search_budget_ms"]: r[2]["search_seconds"] for r in records}
            phases["metapruning: evolution (both budgets)"] = sum(searches.values())
        phases[f"{name}: scoring reported candidates (evaluator)"] = sum(r[1].eval_seconds for r in records)
        phases[f"{name}: total"] = wall[name]
        found[name] = {f: records for f in BUDGETS}
        print(f"{name}: {len(records)} candidates in {wall[name]:.0f} s", flush=True)
    per_budget = max(wall.values()) / len(BUDGETS)
    found["uniform"], found["random"] = {}, {}
    for f in BUDGETS:
        t = time.perf_counter()
        found["uniform"][f] = [uniform_record(ev, budgets[f])]
        phases[f"uniform @{f:.0%}"] = time.perf_counter() - t
        t = time.perf_counter()
        found["random"][f] = random_search(ev, budgets[f], args.seed + int(100 * f), seconds=per_budget)
        phases[f"random @{f:.0%}"] = time.perf_counter() - t
        print(
            f"random @{f:.0%}: {len(found['random'][f])} candidates in {phases[f'random @{f:.0%}']:.0f} s", flush=True
        )
    return found, per_budget


def ft_row(f: float, name: str, m: Metrics, base_ms: float, score: FinetuneScore, **fields: Any) -> dict[str, Any]:
    """One row of the JSON: a chosen policy at budget ``f``, its metrics and its fine-tunes' scores."""
    return {"budget": f, "method": name, "val": m.accuracy, "latency_ms": m.latency_ms,
            "latency_frac": m.latency_ms / base_ms, "mmacs": m.macs / 1e6, "test_pruned": score.before,
            "test_ft": score.mean_after, "test_ft_runs": list(score.after), **fields}  # fmt: skip


def fine_tune_all(
    ev: Evaluator, found: Found, args: argparse.Namespace, s: dict[str, Any], ckpt: Path, phases: dict[str, float]
) -> list[dict[str, Any]]:
    """The same fine-tunes of each method's best policy per budget, from the base weights and (one-shot
    methods, rows ``method*``) from the method's own weights."""
    base_ms = ev.base_metrics().latency_ms
    ft = TrainConfig(epochs=args.ft_epochs, lr=args.ft_lr, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                     seed=args.seed, max_batches_per_epoch=s["ft_batches"])  # fmt: skip
    exporters = {n: own_weights(ev, n, ckpt, s[n], args.seed) for n in ONESHOT}
    seeds = [args.seed + i for i in range(args.ft_seeds)]
    rows: list[dict[str, Any]] = []
    for f in BUDGETS:
        for name in METHODS:
            records = found[name][f]
            best = best_record(records, f * base_ms)
            if best is None:
                rows.append({"budget": f, "method": name, "missing": True})
                continue
            policy, m, _extra = best
            score = finetune_and_score(ev.prune(policy), ev.data.train, ev.data.test, ft, seeds)
            phases[f"fine-tune {name} @{f:.0%}"] = score.seconds
            within = sum(1 for r in records if r[1].latency_ms <= f * base_ms * (1 + 1e-9))
            rows.append(ft_row(f, name, m, base_ms, score, within=within, total=len(records),
                               mean_keep=policy.mean_keep(), channels=policy.channels))  # fmt: skip
            print(
                f"  fine-tuned {name} @{f:.0%}: {score.before:.4f} -> {score.mean_after:.4f} {score.after}", flush=True
            )
            if name in exporters:  # the same policy, starting from the one-shot method's own weights
                t = time.perf_counter()
                model, val = exporters[name](policy.channels)
                own = finetune_and_score(model, ev.data.train, ev.data.test, ft, seeds)
                phases[f"fine-tune {name} own weights @{f:.0%}"] = time.perf_counter() - t
                rows.append({**rows[-1], **ft_row(f, f"{name}*", m, base_ms, own), "val": val})
                print(
                    f"  fine-tuned {name}* @{f:.0%}: {own.before:.4f} -> {own.mean_after:.4f} {own.after}", flush=True
                )
    return rows


def own_weights(ev: Evaluator, name: str, ckpt: Path, cfg: dict[str, Any], seed: int) -> Any:
    """``widths -> (model, val acc)``: the exported one-shot weights (trained supernet or generated)."""
    from prunepilot.oneshot import PruningNet, Supernet, load_state

    path = next(iter(sorted(ckpt.glob(f"{name}-*.pt"))))
    sup = Supernet.build(
        ev.model,
        ev.example,
        space=ev.space,
        importance=ev.cfg.evaluation.importance,
        calib_batches=ev.calib,
        verify=False,
    )
    state = load_state(path)["module"]
    net = None
    if name == "metapruning":
        net = PruningNet(sup, hidden=cfg["train"]["hidden"], seed=seed)
        net.load_state_dict(state)
        net.eval()
    else:
        sup.model.load_state_dict(state)

    def export(widths: dict[str, int]) -> tuple[torch.nn.Module, float]:
        with torch.no_grad():
            weights = net.generate(widths) if net is not None else None
        sup.recalibrate(widths, ev.calib, weights)
        model = sup.export(widths, weights)
        return model, evaluate_accuracy(model, ev.val)

    return export


def oneshot_table(
    ev: Evaluator,
    args: argparse.Namespace,
    s: dict[str, Any],
    rows: list[dict[str, Any]],
    phases: dict[str, float],
    base_test: float,
    per_budget: float,
) -> dict[str, Any]:
    """The BENCHMARKS.md table of this run (also what the script prints): ``phases`` are the seconds
    of each phase, ``base_test`` the base's test accuracy, ``per_budget`` random search's seconds."""
    base = ev.base_metrics()
    ft_images = (s["ft_batches"] or len(ev.data.train)) * 64 * args.ft_epochs
    notes = [
        f"Fashion-MNIST ({ev.data.num_train} train / {ev.data.num_val} held-out val / {ev.data.num_test} test), "
        f"zoo ResNet-20, base test {base_test:.4f}; latency = {base.latency_model} ({base.latency_kind}, "
        f"x86-avx2-core profile, batch 32), base {base.latency_ms:.2f} ms.",
        f"Same fine-tune for every row: {args.ft_epochs} epoch(s) x {s['ft_batches'] or 'all'} batches of 64 "
        f"(~{ft_images} images), SGD lr {args.ft_lr} cosine, momentum 0.9; mean of {args.ft_seeds} fine-tunes whose "
        "batch orders are shared by all methods; 'test +FT' is on the test split.",
        "Rows without *: the chosen policy applied to the base weights (apply_policy + BN recalibration), as the "
        "apply step does; 'val acc' = evaluator.evaluate on the held-out split of the training data (what chose it). "
        "method* = the same policy starting from the method's own weights (exported trained supernet / generated "
        "weights, BN recalibrated); 'val acc' is of those weights.",
        f"Equal wall-clock: random search ran {per_budget:.0f} s per budget (the slower one-shot method's total, "
        f"training included, / {len(BUDGETS)}); uniform has nothing to search (the widest uniform ratio in budget).",
    ]
    for f in BUDGETS:
        ref = next((r for r in rows if r["budget"] == f and r["method"] == "uniform" and not r.get("missing")), None)
        if ref is None:
            continue
        se = 100 * (ref["test_ft"] * (1 - ref["test_ft"]) / ev.data.num_test) ** 0.5
        deltas = ", ".join(
            f"{r['method']} {100 * (r['test_ft'] - ref['test_ft']):+.2f}"
            for r in rows
            if r["budget"] == f and r["method"] != "uniform" and not r.get("missing")
        )
        notes.append(
            f"@{f:.0%}: test accuracy after fine-tune vs uniform (points): {deltas} "
            f"(binomial SE of one accuracy on {ev.data.num_test} test images: {se:.1f}; FT sd in the table)."
        )
    notes.append("Wall-clock (s): " + "; ".join(f"{k} {v:.1f}" for k, v in phases.items()) + ".")
    title = f"One-shot search vs baselines, Fashion-MNIST ResNet-20 ({'quick' if args.quick else 'full'})"
    return result_table(title, COLUMNS, [table_row(r) for r in rows], notes)


def table_row(r: dict[str, Any]) -> list[Any]:
    """One table row from one entry of the JSON's ``rows`` (its own numbers, unformatted)."""
    if r.get("missing"):
        return [f"{r['budget']:.0%}", r["method"]] + [None] * (len(COLUMNS) - 2)
    return [f"{r['budget']:.0%}", r["method"], r["val"], r["latency_ms"], f"{r['latency_frac']:.0%}", r["mmacs"],
            r["mean_keep"], r["test_pruned"], r["test_ft"], float(np.std(r["test_ft_runs"])),
            f"{r['within']}/{r['total']}"]  # fmt: skip


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("prunepilot.search.strategies.oneshot").setLevel(logging.INFO)
    s = settings(args.quick)
    ckpt = args.checkpoint_dir or Path(tempfile.mkdtemp(prefix="oneshot-bench-"))
    phases: dict[str, float] = {}

    t0 = time.perf_counter()
    ev = get_evaluator(validate_config(search_config(args, s)))
    phases["base model + evaluator"] = time.perf_counter() - t0
    base = ev.base_metrics()
    base_test = evaluate_accuracy(ev.model, ev.data.test)
    print(
        f"base ResNet-20: val {base.accuracy:.4f}, test {base_test:.4f}, {base.latency_ms:.3f} ms "
        f"({base.latency_model}, {base.latency_kind}), {base.macs / 1e6:.1f} MMACs; "
        f"train {ev.data.num_train}, val {ev.data.num_val}, test {ev.data.num_test}; threads {args.threads}",
        flush=True,
    )
    found, random_s = search(ev, args, s, ckpt, phases)
    rows = fine_tune_all(ev, found, args, s, ckpt, phases)
    table = oneshot_table(ev, args, s, rows, phases, base_test, random_s)
    print_result_table(table)
    doc = {
        "benchmark": "oneshot",
        "table": table,
        "args": args_record(args),
        "settings": s,
        "base": {**base.to_dict(), "test": base_test},
        "budgets_ms": {f: f * base.latency_ms for f in BUDGETS},
        "rows": rows,
        "phases": phases,
    }
    write_json(args.out / f"oneshot-{'quick-' if args.quick else ''}{stamp()}.json", doc)


if __name__ == "__main__":
    main()
