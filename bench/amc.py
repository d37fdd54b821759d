"""AMC-DDPG vs uniform pruning vs random search: ResNet-20 on Fashion-MNIST at 50% latency.

Issue 4's benchmark. The zoo ResNet-20 is trained once on Fashion-MNIST (from
``$PRUNEPILOT_DATA`` or ``--data-root``) and cached; the latency budget is a fraction
(``--budget``, default 0.5) of the base model's latency *measured* on this CPU. Every method
proposes policies within that budget (by the evaluator's fast latency predictor) and every
candidate is scored the same way: prune, recalibrate BN, accuracy on the held-out part of the
*training* split, no fine-tuning (the search layer's :class:`~prunepilot.search.evaluator.Evaluator`).

* ``uniform``: the largest uniform keep ratio within the budget (one policy);
* ``amc-ddpg``: ``--episodes`` episodes of :class:`~prunepilot.envs.PruningEnv` (AMC's
  resource-constrained mode, reward ``acc``), per seed;
* ``random``: ``--episodes`` random policies (keep ratios uniform in ``[lower_bound, 1]``,
  projected into the budget exactly as the search layer's ``random`` strategy does), per seed.

Each method's best policy (by held-out accuracy) is then scored once on the test split, so
the comparison is not flattered by picking the best of many on the same images.

Usage::

    python bench/amc.py                      # 200 episodes, 3 seeds, budget 0.5
    python bench/amc.py --quick              # a couple of minutes: tiny training, 20 episodes, 1 seed

Prints the table and writes ``<out-dir>/amc-<timestamp>.json`` (default ``bench/results/``); the JSON
carries that same table (:func:`amc_table`) for ``bench/report.py`` to put in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
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

from bench.common import RESULTS, args_record, machine_note, print_notes, result_table, stamp, write_json
from bench.inprocess import Record, random_search, run_strategy, uniform_record
from prunepilot.data import DataConfig
from prunepilot.envs import metrics_dict
from prunepilot.errors import ConfigError
from prunepilot.hw_models.base import runtime_versions
from prunepilot.hw_models.measure import cpu_name
from prunepilot.pruning import PruningPolicy
from prunepilot.search.config import SearchConfig
from prunepilot.search.evaluator import Evaluator, get_evaluator
from prunepilot.training import TrainConfig, evaluate_accuracy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--episodes", type=int, default=200, help="episodes of amc-ddpg = evaluations of random search")
    p.add_argument("--seeds", type=int, default=3, help="seeds per method (0 .. N-1)")
    p.add_argument("--budget", type=float, default=0.5, help="latency budget as a fraction of the base model's")
    p.add_argument("--quick", action="store_true", help="tiny training, 20 episodes, 1 seed: a smoke run")
    p.add_argument("--data-root", type=Path, default=None, help="dataset root (default: $PRUNEPILOT_DATA)")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/prunepilot"), help="trained base models")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where the JSON result goes")
    p.add_argument("--epochs", type=int, default=None, help="base-model training epochs (default 6; quick 1)")
    p.add_argument("--train-subset", type=int, default=None, help="training images (default 30000; quick 2000)")
    p.add_argument("--val-subset", type=int, default=None, help="held-out images per candidate (default 1000)")
    p.add_argument("--test-subset", type=int, default=None, help="test images for the final scores (default 5000)")
    p.add_argument("--lower-bound", type=float, default=0.2, help="smallest keep ratio (AMC: 0.2)")
    p.add_argument("--warmup", type=int, default=None, help="amc-ddpg warm-up episodes (default episodes // 4)")
    p.add_argument("--device", default="local-cpu", help="device name or YAML; latency is measured with torch-cpu")
    p.add_argument("--latency-batch", type=int, default=1, help="batch size latency is measured at")
    p.add_argument("--threads", type=int, default=1, help="torch threads for evaluation and the agent")
    args = p.parse_args(argv)
    quick = args.quick
    args.episodes = 20 if quick and args.episodes == 200 else args.episodes
    args.seeds = 1 if quick and args.seeds == 3 else args.seeds
    args.epochs = args.epochs if args.epochs is not None else (1 if quick else 6)
    args.train_subset = args.train_subset or (2000 if quick else 30000)
    args.val_subset = args.val_subset or (256 if quick else 1000)
    args.test_subset = args.test_subset or (512 if quick else 5000)
    return args


def device_name(name: str, workdir: Path) -> str:
    """``name`` if it resolves to a device; else a torch-cpu device YAML written in ``workdir``."""
    from prunepilot.hw_models.devices import load_device

    try:
        load_device(name)
        return name
    except ConfigError:
        path = workdir / f"{name}.yaml"
        path.write_text(
            f"name: {name}\ndescription: this machine's CPU, torch eager, 1 thread (written by bench/amc.py)\n"
            "latency_model: torch-cpu\nsettings: {threads: 1}\n"
        )
        print(f"device {name!r} not found; measuring with torch-cpu via {path}")
        return str(path)


def build_config(args: argparse.Namespace, device: str) -> SearchConfig:
    data = DataConfig(
        name="fashion-mnist",
        root=args.data_root,
        val_size=5000,
        val_subset=args.val_subset,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        calib_size=256,
        seed=0,
    )
    return SearchConfig.model_validate(
        {
            "name": "bench-amc",
            "seed": 0,
            "model": {
                "spec": "resnet20",
                "train": TrainConfig(epochs=args.epochs, lr=0.05, seed=0).model_dump(),
                "cache_dir": str(args.cache_dir),
            },
            "data": data.model_dump(),
            "device": {
                "name": device,
                "latency_model": "torch-cpu",
                "batch_size": args.latency_batch,
                "settings": {"threads": 1, "min_runs": 15, "min_seconds": 0.05},
            },
            "budget": {"fraction": args.budget},
            "evaluation": {"lower_bound": args.lower_bound, "bn_batches": 2, "round_to": 1, "importance": "l1"},
        }
    )


def base_metrics(ev: Evaluator) -> dict[str, Any]:
    base = getattr(ev, "base", None)
    return metrics_dict(base if base is not None else ev.base_metrics())


def score_on_test(ev: Evaluator, policy: PruningPolicy) -> float:
    """Accuracy of the pruned, BN-recalibrated model on the test split (final reports only)."""
    return float(evaluate_accuracy(ev.prune(policy), ev.data.test))


def found_in(records: list[Record], seconds: float) -> dict[str, Any]:
    """A method's outcome from the candidates it reported: the most accurate one, the accuracy of
    every episode in order, and how many were evaluated (not answered by the evaluation cache)."""
    policy, metrics, _extra = max(records, key=lambda r: r[1].accuracy)
    cached = sum(bool(extra.get("cached")) for _p, _m, extra in records)
    return {
        "policy": policy,
        "metrics": metrics_dict(metrics),
        "curve": [m.accuracy for _p, m, _e in records],
        "evaluations": len(records) - cached,
        "cache_hits": cached,
        "seconds": seconds,
    }


def run_amc(ev: Evaluator, budget_ms: float, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The ``amc-ddpg`` strategy: ``--episodes`` episodes, reward ``acc``."""
    settings = {"reward": "acc", "warmup_episodes": args.warmup}
    start = time.perf_counter()
    records = run_strategy(ev, "amc-ddpg", settings, budget_ms, seed, evaluations=args.episodes)
    return found_in(records, time.perf_counter() - start)


def run_random(ev: Evaluator, budget_ms: float, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The ``random`` strategy: ``--episodes`` candidates."""
    start = time.perf_counter()
    records = random_search(ev, budget_ms, seed, evaluations=args.episodes)
    return found_in(records, time.perf_counter() - start)


def row(method: str, seed: int | None, found: dict[str, Any], ev: Evaluator, budget_ms: float) -> dict[str, Any]:
    policy: PruningPolicy = found["policy"]
    m = found["metrics"]
    return {
        "method": method,
        "seed": seed,
        "val_acc": m["accuracy"],
        "test_acc": score_on_test(ev, policy),
        "latency_ms": m["latency_ms"],
        "latency_kind": m.get("latency_kind"),
        "predicted_ms": ev.predict_latency_ms(policy.channels),
        "within_budget_predicted": ev.predict_latency_ms(policy.channels) <= budget_ms,
        "macs": m.get("macs"),
        "evaluations": found.get("evaluations", 1),
        "cache_hits": found.get("cache_hits", 0),
        "seconds": found.get("seconds", 0.0),
        "mean_keep": policy.mean_keep(),
        "policy": policy.model_dump(mode="json"),
        "curve": found.get("curve", []),
    }


COLUMNS = ["method", "seed", "val acc", "test acc", "latency ms", "predicted ms", "mean keep", "evaluations",
           "cache hits", "time s"]  # fmt: skip


def summary(rows: list[dict[str, Any]], method: str, key: str) -> tuple[float, float]:
    values = [r[key] for r in rows if r["method"] == method]
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table_row(r: dict[str, Any]) -> list[Any]:
    """One table row from one entry of the JSON's ``rows`` (its own numbers, unformatted)."""
    return [r["method"], r["seed"], r["val_acc"], r["test_acc"], r["latency_ms"], r["predicted_ms"], r["mean_keep"],
            r["evaluations"], r["cache_hits"], r["seconds"]]  # fmt: skip


def amc_table(record: dict[str, Any]) -> dict[str, Any]:
    """The BENCHMARKS.md table for one ``amc-*.json`` record (also what the script prints)."""
    rows, base, budget_ms, args = record["rows"], record["base"], record["budget_ms"], record["args"]
    versions = {k: v for k, v in record["versions"].items() if k not in ("cpu", "cpus")}
    methods = [m for m in ("uniform", "amc-ddpg", "random") if any(r["method"] == m for r in rows)]
    notes = [
        f"Base ResNet-20: held-out val acc {base['accuracy']:.4f}, latency "
        f"{base.get('latency_ms_fit_anchor', base['latency_ms']):.3f} ms ({base.get('latency_kind')}); budget "
        f"{budget_ms:.3f} ms ({args['budget']:.0%} of the base).",
        f"{args['episodes']} episodes of amc-ddpg = {args['episodes']} random policies per seed, {args['seeds']} "
        f"seed(s); val acc: held-out part of the training split (BN-recalibrated, no fine-tune); test acc: the best "
        f"policy once on the test split" + (" (quick: tiny training and subsets)." if args.get("quick") else "."),
    ]
    for method in methods:
        val_m, val_s = summary(rows, method, "val_acc")
        test_m, test_s = summary(rows, method, "test_acc")
        notes.append(f"{method}: val {val_m:.4f} +- {val_s:.4f}, test {test_m:.4f} +- {test_s:.4f} (mean +- sd).")
    if {"amc-ddpg", "uniform", "random"} <= set(methods):
        amc, uni, rnd = (summary(rows, m, "test_acc")[0] for m in ("amc-ddpg", "uniform", "random"))
        verdict = {True: "beats", False: "does NOT beat"}
        notes.append(
            f"amc-ddpg vs uniform: {100 * (amc - uni):+.2f} test-acc points ({verdict[amc > uni]} uniform); "
            f"vs random: {100 * (amc - rnd):+.2f} points ({verdict[amc > rnd]} random)."
        )
    kinds = sorted({str(r["latency_kind"]) for r in rows if r.get("latency_kind")})
    notes += [
        f"Latency: {' and '.join(kinds) or 'unknown'} on {args['device']} at batch {args['latency_batch']} "
        f"(latency ms); predicted ms is the evaluator's fast predictor, which the budget check uses.",
        machine_note(record["versions"].get("cpu"), record["versions"].get("cpus"), versions.get("platform"), versions),
    ]
    return result_table(
        f"AMC-DDPG vs uniform vs random: ResNet-20 on Fashion-MNIST at {args['budget']:.0%} latency"
        + (" (quick)" if args.get("quick") else ""),
        COLUMNS,
        [table_row(r) for r in rows],
        notes,
    )


def print_table(table: dict[str, Any]) -> None:
    print(f"\n{table['title']}")
    print(f"{'method':<10} {'seed':>4} {'val acc':>8} {'test acc':>8} {'lat ms':>8} {'pred ms':>8} "
          f"{'keep':>6} {'evals':>6} {'hits':>5} {'time s':>7}")  # fmt: skip
    for method, seed, val, test, lat, pred, keep, evals, hits, secs in table["rows"]:
        seed_text = "-" if seed is None else str(seed)
        print(f"{method:<10} {seed_text:>4} {val:>8.4f} {test:>8.4f} {lat:>8.3f} {pred:>8.3f} {keep:>6.3f} "
              f"{evals:>6} {hits:>5} {secs:>7.1f}")  # fmt: skip
    print_notes(table["notes"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_config(args, device_name(args.device, Path(tmp)))
        print(f"building the evaluator (trains ResNet-20 once into {args.cache_dir} if needed) ...", flush=True)
        ev = get_evaluator(cfg)
        setup_s = time.perf_counter() - started
        base = base_metrics(ev)
        base_ms = float(base["latency_ms"])
        if ev.latency.requires_model:
            # the fast predictor for budget checks is anchored on a measurement of the base model
            # and one of the lower-bound model; the budget is a fraction of that same measurement,
            # so the predictor and the budget agree exactly at full width
            full, low = ev.calibrate_fit()
            base_ms = float(full.ms)
            base["latency_ms_fit_anchor"] = base_ms
            base["latency_ms_lower_bound"] = float(low.ms)
            if (full.cv or 0.0) > 0.1:
                print(f"warning: the base latency measurement is noisy (CV {full.cv:.2f}); is the machine busy?")
        budget_ms = args.budget * base_ms
        print(f"base model: {base}; budget {budget_ms:.3f} ms; groups {len(ev.space.groups)}", flush=True)

        start = time.perf_counter()
        policy, metrics, _extra = uniform_record(ev, budget_ms)
        uniform = {"policy": policy, "metrics": metrics_dict(metrics), "seconds": time.perf_counter() - start}
        rows = [row("uniform", None, uniform, ev, budget_ms)]
        runs: list[tuple[str, Callable[..., dict[str, Any]]]] = [("amc-ddpg", run_amc), ("random", run_random)]
        for seed in range(args.seeds):
            for method, fn in runs:
                print(f"{method} seed {seed}: {args.episodes} episodes ...", flush=True)
                found = fn(ev, budget_ms, seed, args)
                rows.append(row(method, seed, found, ev, budget_ms))
                r = rows[-1]
                print(f"  best val {r['val_acc']:.4f} test {r['test_acc']:.4f} in {r['seconds']:.0f} s", flush=True)

    total_s = time.perf_counter() - started
    record = {
        "benchmark": "amc",
        "args": args_record(args),
        "config": cfg.model_dump(mode="json"),
        "base": base,
        "budget_ms": budget_ms,
        "rows": rows,
        "seconds": {"total": total_s, "setup": setup_s},
        "versions": {**runtime_versions(), "cpu": cpu_name(), "cpus": os.cpu_count()},
    }
    record["table"] = amc_table(record)
    print_table(record["table"])
    print(f"total {total_s / 60:.1f} min (evaluator setup incl. training/loading {setup_s:.0f} s)")
    write_json(args.out_dir / f"amc-{stamp()}{'-quick' if args.quick else ''}.json", record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
