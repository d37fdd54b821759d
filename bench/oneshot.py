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
import copy
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunepilot.pruning import PruningPolicy
from prunepilot.search.config import validate_config
from prunepilot.search.evaluator import Evaluator, Metrics
from prunepilot.search.space import project_to_budget
from prunepilot.search.strategies import TrialContext, get_strategy
from prunepilot.search.strategies.sampling import evaluate_ratios
from prunepilot.training import TrainConfig, evaluate_accuracy, fit

BUDGETS = (0.5, 0.3)
Record = tuple[PruningPolicy, Metrics, dict[str, Any]]


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


def run_strategy(ev: Evaluator, name: str, cfg: dict[str, Any], budget_ms: float, seed: int) -> list[Record]:
    records: list[Record] = []
    ctx = TrialContext(
        evaluator=ev,
        budget_ms=budget_ms,
        lower_bound=ev.cfg.evaluation.lower_bound,
        evaluations=1,
        seed=seed,
        trial_id=name,
        report=lambda p, m, e: records.append((p, m, dict(e))),
    )
    get_strategy(name, cfg).run_trial(ctx, {"trial_index": 0})
    return records


def random_search(ev: Evaluator, budget_ms: float, seconds: float, seed: int) -> list[Record]:
    """The ``random`` strategy's trial body, repeated until ``seconds`` have passed."""
    records: list[Record] = []
    rng = np.random.default_rng(seed)
    lb = ev.cfg.evaluation.lower_bound
    ctx = TrialContext(
        evaluator=ev,
        budget_ms=budget_ms,
        lower_bound=lb,
        evaluations=1,
        seed=seed,
        trial_id="random",
        report=lambda p, m, e: records.append((p, m, dict(e))),
    )
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        ratios = {g.name: float(rng.uniform(lb, 1.0)) for g in ev.space.groups}
        evaluate_ratios(ctx, ratios, project=True)
    return records


def uniform_policy(ev: Evaluator, budget_ms: float) -> list[Record]:
    lb = ev.cfg.evaluation.lower_bound
    ratios, _ = project_to_budget(
        {g.name: 1.0 for g in ev.space.groups},
        lb,
        budget_ms,
        lambda r: ev.predict_latency_ms(ev.make_policy(r).channels),
        steps=30,
    )
    policy = ev.make_policy(ratios)
    return [(policy, ev.evaluate(policy), {"uniform_ratio": next(iter(ratios.values()))})]


def best_within(records: list[Record], budget_ms: float) -> Record | None:
    ok = [r for r in records if r[1].latency_ms <= budget_ms * (1 + 1e-9)]
    return max(ok, key=lambda r: (r[1].accuracy, -r[1].latency_ms)) if ok else None


def fine_tune(
    ev: Evaluator, policy: PruningPolicy, ft: TrainConfig, seeds: list[int], model: torch.nn.Module | None = None
) -> tuple[float, list[float], float]:
    """Prune the base model (or take ``model``), recalibrate, fine-tune once per seed.

    Every method's fine-tune with seed ``s`` sees the same batches in the same order (the training
    loader's shuffling generator is re-seeded), so differences come from the policies and weights.
    Returns (test accuracy before, test accuracy after each fine-tune, seconds).
    """
    start = time.perf_counter()
    init = ev.prune(policy) if model is None else model
    before = evaluate_accuracy(init, ev.data.test)
    after = []
    for seed in seeds:
        tuned = copy.deepcopy(init)
        gen = getattr(ev.data.train, "generator", None)
        if isinstance(gen, torch.Generator):
            gen.manual_seed(seed)
        fit(tuned, ev.data.train, ft.model_copy(update={"seed": seed}))
        after.append(evaluate_accuracy(tuned, ev.data.test))
    return before, after, time.perf_counter() - start


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


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def main() -> None:
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
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    if not args.data_root:
        raise SystemExit("set PRUNEPILOT_DATA or --data-root to the folder holding FashionMNIST/raw")
    torch.set_num_threads(args.threads)
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("prunepilot.search.strategies.oneshot").setLevel(logging.INFO)
    s = settings(args.quick)
    ckpt = args.checkpoint_dir or Path(tempfile.mkdtemp(prefix="oneshot-bench-"))
    phases: dict[str, float] = {}

    t0 = time.perf_counter()
    ev = Evaluator(validate_config(search_config(args, s)))
    phases["base model + evaluator"] = time.perf_counter() - t0
    base = ev.base_metrics()
    base_test = evaluate_accuracy(ev.model, ev.data.test)
    budgets = {f: f * base.latency_ms for f in BUDGETS}
    print(
        f"base ResNet-20: val {base.accuracy:.4f}, test {base_test:.4f}, {base.latency_ms:.3f} ms "
        f"({base.latency_model}, {base.latency_kind}), {base.macs / 1e6:.1f} MMACs; "
        f"train {ev.data.num_train}, val {ev.data.num_val}, test {ev.data.num_test}; threads {args.threads}",
        flush=True,
    )

    found: dict[str, dict[float, list[Record]]] = {}
    wall: dict[str, float] = {}
    for name in ("autoslim", "metapruning"):
        cfg = {**s[name], "checkpoint_dir": str(ckpt)}
        t = time.perf_counter()
        records = run_strategy(ev, name, cfg, budgets[BUDGETS[0]], args.seed)
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
        found["uniform"][f] = uniform_policy(ev, budgets[f])
        phases[f"uniform @{f:.0%}"] = time.perf_counter() - t
        t = time.perf_counter()
        found["random"][f] = random_search(ev, budgets[f], per_budget, args.seed + int(100 * f))
        phases[f"random @{f:.0%}"] = time.perf_counter() - t
        print(
            f"random @{f:.0%}: {len(found['random'][f])} candidates in {phases[f'random @{f:.0%}']:.0f} s", flush=True
        )

    ft = TrainConfig(
        epochs=args.ft_epochs,
        lr=args.ft_lr,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="cosine",
        seed=args.seed,
        max_batches_per_epoch=s["ft_batches"],
    )
    exporters = {n: own_weights(ev, n, ckpt, s[n], args.seed) for n in ("autoslim", "metapruning")}
    seeds = [args.seed + i for i in range(args.ft_seeds)]
    rows = []
    for f in BUDGETS:
        for name in ("uniform", "random", "autoslim", "metapruning"):
            best = best_within(found[name][f], budgets[f])
            if best is None:
                rows.append({"budget": f, "method": name, "missing": True})
                continue
            policy, m, _extra = best
            pre, post, secs = fine_tune(ev, policy, ft, seeds)
            phases[f"fine-tune {name} @{f:.0%}"] = secs
            n = sum(1 for r in found[name][f] if r[1].latency_ms <= budgets[f] * (1 + 1e-9))
            rows.append(
                {
                    "budget": f,
                    "method": name,
                    "val": m.accuracy,
                    "latency_ms": m.latency_ms,
                    "latency_frac": m.latency_ms / base.latency_ms,
                    "mmacs": m.macs / 1e6,
                    "test_pruned": pre,
                    "test_ft": float(np.mean(post)),
                    "test_ft_runs": post,
                    "within": n,
                    "total": len(found[name][f]),
                    "mean_keep": policy.mean_keep(),
                    "channels": policy.channels,
                }
            )
            print(
                f"  fine-tuned {name} @{f:.0%}: test {pre:.4f} -> {np.mean(post):.4f} {post} ({secs:.0f} s)", flush=True
            )
            if name in exporters:  # the same policy, starting from the one-shot method's own weights
                t = time.perf_counter()
                model, val = exporters[name](policy.channels)
                pre, post, secs = fine_tune(ev, policy, ft, seeds, model)
                phases[f"fine-tune {name} own weights @{f:.0%}"] = time.perf_counter() - t
                rows.append(
                    {
                        **rows[-1],
                        "method": f"{name}*",
                        "val": val,
                        "test_pruned": pre,
                        "test_ft": float(np.mean(post)),
                        "test_ft_runs": post,
                    }
                )
                print(
                    f"  fine-tuned {name} (own weights) @{f:.0%}: test {pre:.4f} -> {np.mean(post):.4f} {post}",
                    flush=True,
                )

    ft_images = (s["ft_batches"] or len(ev.data.train)) * 64 * args.ft_epochs
    notes = [
        f"Fashion-MNIST ({ev.data.num_train} train / {ev.data.num_val} held-out val / {ev.data.num_test} test), "
        f"zoo ResNet-20, base test {base_test:.4f}; latency = {base.latency_model} ({base.latency_kind}, "
        f"x86-avx2-core profile, batch 32), base {base.latency_ms:.2f} ms.",
        f"Same fine-tune for every row: {args.ft_epochs} epoch(s) x {s['ft_batches'] or 'all'} batches of 64 "
        f"(~{ft_images} images), SGD lr {args.ft_lr} cosine, momentum 0.9; mean of {len(seeds)} fine-tunes whose "
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
    columns = [
        "budget",
        "method",
        "val acc",
        "latency ms",
        "latency / base",
        "MMACs",
        "mean keep",
        "test pruned",
        "test +FT",
        "FT sd",
        "in budget / candidates",
    ]
    table_rows: list[list[Any]] = []
    for r in rows:
        if r.get("missing"):
            table_rows.append([f"{r['budget']:.0%}", r["method"]] + [None] * (len(columns) - 2))
            continue
        table_rows.append(
            [
                f"{r['budget']:.0%}",
                r["method"],
                r["val"],
                r["latency_ms"],
                f"{r['latency_frac']:.0%}",
                r["mmacs"],
                r["mean_keep"],
                r["test_pruned"],
                r["test_ft"],
                float(np.std(r["test_ft_runs"])),
                f"{r['within']}/{r['total']}",
            ]
        )
    title = f"One-shot search vs baselines, Fashion-MNIST ResNet-20 ({'quick' if args.quick else 'full'})"
    widths = [max(len(str(c)), *(len(_cell(row[i])) for row in table_rows)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(str(c).rjust(w) for c, w in zip(columns, widths, strict=True)))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for row in table_rows:
        print("  ".join(_cell(c).rjust(w) for c, w in zip(row, widths, strict=True)))
    for note in notes:
        print(f"- {note}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"oneshot-{'quick-' if args.quick else ''}{time.strftime('%Y%m%d-%H%M%S')}.json"
    doc = {
        "benchmark": "oneshot",
        "table": {"title": title, "columns": columns, "rows": table_rows, "notes": notes},
        "args": {k: str(v) for k, v in vars(args).items()},
        "settings": s,
        "base": {**base.to_dict(), "test": base_test},
        "budgets_ms": budgets,
        "rows": rows,
        "phases": phases,
    }
    path.write_text(json.dumps(doc, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
