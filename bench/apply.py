"""Does `prunepilot apply` deliver what the search promised? Fashion-MNIST, zoo ResNet-20.

1. Train the base ResNet-20 once (``prunepilot.training.train_base_model``, cached).
2. Take a non-uniform policy at ~50% of the base's latency: ``--policy`` (exported from a run
   folder by ``prunepilot pareto RUN --export``) or, without it, a small ``random`` search run
   as ``prunepilot search`` runs it (``prunepilot.search.run``, local backend: candidates scored
   on held-out *training* data, latency on ``--device``) and the policy ``pareto --export``
   writes from it (the most accurate within the budget, on re-measured latency). Latency is
   measured with ``--device``'s protocol timed for >= 1 s and 50 runs per figure (a few-ms model
   on a shared machine varies ±10% between two 0.3 s measurements).
3. Find the uniform keep ratio with the same measured latency (bisection).
4. Apply both policies with ``prunepilot.apply.apply_to_model``, fine-tuning ``--epochs`` epochs
   the same way, with and without logit KD from the base; report test accuracy after pruning
   (+BN recalibration) and after fine-tuning, and the applied model's measured latency vs the
   search-time figure (target: within ±10%).
5. Time applying a policy (no fine-tuning, no export, no latency) to torchvision ResNet-50 at
   224x224 (target: < 3 s).

Prints a table and writes ``apply[-quick].json`` to ``--out-dir`` (default bench/results/), carrying the
same table (:func:`apply_table`) for ``bench/report.py`` to put in BENCHMARKS.md. Needs Fashion-MNIST
under ``--data-root`` (or ``$PRUNEPILOT_DATA``) in torchvision's layout (``FashionMNIST/raw/...``).

    .venv/bin/python bench/apply.py --quick              # ~10 minutes on 2 busy cores
    .venv/bin/python bench/apply.py --epochs 5           # the full run
    .venv/bin/python bench/apply.py --policy policy.json --epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.common import RESULTS, args_record, machine, machine_note, print_notes, result_table, write_json
from prunepilot.apply import ApplyConfig, apply_to_model
from prunepilot.data import DataConfig
from prunepilot.hw_models.base import LatencyModel, runtime_versions
from prunepilot.hw_models.devices import load_device
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy
from prunepilot.training import DistillConfig, TrainConfig, train_base_model

SPEC = "resnet20"
SHAPE = (1, 1, 28, 28)
TARGET_LATENCY_PCT = 10.0
TARGET_APPLY_S = 3.0
COLUMNS = ["variant", "mean keep", "MACs (x base)", "params (x base)", "acc pruned", "acc +BN recal",
           "acc fine-tuned", "search ms", "applied ms", "diff %", "within ±10%", "drift-corrected diff %",
           "corrected within ±10%"]  # fmt: skip


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs per variant (default 3; quick 1)")
    ap.add_argument("--quick", action="store_true", help="smaller subsets, fewer candidates, 1 epoch")
    ap.add_argument("--policy", type=Path, default=None, help="policy JSON from a run folder (skips the search)")
    ap.add_argument("--data-root", type=Path, default=os.environ.get("PRUNEPILOT_DATA"), help="dataset folder")
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/prunepilot"), help="base-model cache")
    ap.add_argument("--device", default="local-cpu-cputime",
                    help="latency device for search and apply (timed for >= 1 s per figure)")  # fmt: skip
    ap.add_argument("--latency-batch", type=int, default=16, help="latency batch size (compute-bound, not overhead)")
    ap.add_argument("--budget", type=float, default=0.5, help="latency budget as a fraction of the base's")
    ap.add_argument("--candidates", type=int, default=None, help="random-search candidates (default 24; quick 10)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: a shared 2-core machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.data_root is None:
        ap.error("give --data-root or set PRUNEPILOT_DATA to the folder holding FashionMNIST/")
    args.epochs = args.epochs if args.epochs is not None else (1 if args.quick else 3)
    args.candidates = args.candidates or (10 if args.quick else 24)
    return args


def data_config(args: argparse.Namespace) -> DataConfig:
    return DataConfig(
        name="fashion-mnist",
        root=args.data_root,
        batch_size=128,
        val_size=5000,
        val_subset=1000 if args.quick else 2000,
        train_subset=10000 if args.quick else 30000,
        test_subset=3000 if args.quick else None,
        calib_size=512,
        seed=args.seed,
    )


def measure(lm: LatencyModel, model: torch.nn.Module, batch: int) -> float:
    return float(lm.measure_ms(model.eval(), SHAPE, batch).ms)


def searched_policy(
    args: argparse.Namespace, checkpoint: Path, device_file: str, folder: Path
) -> tuple[PruningPolicy, list[dict[str, Any]], Path, float]:
    """A ``random`` search of ``--candidates`` evaluations, as ``prunepilot search`` runs it
    (``prunepilot.search.run``, local backend, into ``folder/search-run``), and the policy
    ``prunepilot pareto --export`` writes from it: the most accurate candidate within the budget
    (judged on re-measured latency where there is one). Returns the policy, one row per
    candidate, the run folder and the search's measured base latency."""
    import prunepilot.search
    from prunepilot.search.pareto import best_within_budget, budget_latency
    from prunepilot.search.store import RunStore

    cfg = {
        "name": "bench-apply",
        "seed": args.seed,
        "model": {"spec": SPEC, "checkpoint": str(checkpoint)},
        "data": data_config(args).model_dump(mode="json"),
        "device": {"name": device_file, "batch_size": args.latency_batch},
        "budget": {"fraction": args.budget},
        "evaluation": {"uniform_baseline": 0},
        "strategy": {"name": "random", "evaluations": args.candidates},
    }
    result = prunepilot.search.run(cfg, backend="local", run_dir=folder / "search-run", progress=False)
    store = RunStore(result.run_dir)
    candidates = store.ok()
    best = best_within_budget(candidates, result.budget_ms)
    if best is None:
        raise SystemExit(f"no candidate of the search is within {result.budget_ms:.3f} ms; raise --budget")
    policy = PruningPolicy.load(store.export_policy(best, folder / "searched.json"))
    rows = [
        {"candidate": c.id, "accuracy": c.metrics.accuracy, "latency_ms": budget_latency(c),
         "latency_kind": c.metrics.latency_kind, "mean_keep": c.policy.mean_keep()}
        for c in candidates
    ]  # fmt: skip
    return policy, rows, result.run_dir, result.base.latency_ms


def uniform_at_latency(
    base: torch.nn.Module, space: PruningSpace, lm: LatencyModel, target_ms: float, batch: int
) -> PruningPolicy:
    """The uniform policy whose measured latency is closest to ``target_ms`` (bisection on the ratio)."""
    example = torch.zeros(SHAPE)
    lo, hi = 0.1, 1.0
    best: tuple[float, PruningPolicy, float] | None = None
    for _ in range(6):
        mid = (lo + hi) / 2
        policy = PruningPolicy.uniform(space, mid)
        ms = measure(lm, apply_policy(base, policy, example, space=space), batch)
        if best is None or abs(ms - target_ms) < abs(best[2] - target_ms):
            best = (mid, policy, ms)
        lo, hi = (mid, hi) if ms < target_ms else (lo, mid)
    assert best is not None
    ratio, policy, ms = best
    meta = {"source": f"uniform keep {ratio:.3f} at the policy's latency",
            "metrics": {"latency_ms": ms, "latency_kind": "measured", "latency_model": lm.name}}  # fmt: skip
    return policy.model_copy(update={"metadata": meta})


def with_run(policy: PruningPolicy, run: Path) -> PruningPolicy:
    return policy.model_copy(update={"metadata": {**policy.metadata, "run": str(run)}})


def careful_device(base_device: str, folder: Path) -> str:
    """A device YAML like ``base_device`` but timing longer (>= 1 s and 50 runs per figure).

    Small models at batch 16 run in a few ms; on a shared machine the default protocol's 0.3 s
    leaves ±10% between two measurements of the same model, which would hide what this bench
    checks (the applied model against the search's figure).
    """
    import yaml

    dev = load_device(base_device)
    settings = {**dev.settings, "min_seconds": 1.0, "min_runs": 50, "cv_threshold": 0.05}
    path = folder / f"{dev.name}-careful.yaml"
    record = {"name": f"{dev.name}-careful", "latency_model": dev.latency_model, "settings": settings,
              "description": f"{dev.description} (>= 1 s per figure)"}  # fmt: skip
    path.write_text(yaml.safe_dump(record))
    return str(path)


def time_resnet50_apply(folder: Path, repeats: int) -> dict[str, Any]:
    """Wall and CPU time of apply_to_model (no data, fine-tuning, export or latency) on ResNet-50."""
    shape = (1, 3, 224, 224)
    model = build_model("torchvision:resnet50", num_classes=1000)
    space = PruningSpace.build(model, torch.zeros(1, 3, 32, 32))
    rng = random.Random(0)
    policy = PruningPolicy.from_ratios(space, [rng.uniform(0.3, 1.0) for _ in space.groups]).save(folder / "r50.json")
    walls, cpus, prunes = [], [], []
    for i in range(repeats):
        cfg = ApplyConfig(policy=policy, model="torchvision:resnet50", out=folder / f"r50-{i}", input_shape=shape,
                          num_classes=1000, measure_latency=False)  # fmt: skip
        w0, c0 = time.perf_counter(), time.process_time()
        result = apply_to_model(cfg)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        prunes.append(result.report["seconds"]["prune"])
    return {
        "groups": len(space.groups),
        "wall_s": walls,
        "cpu_s": cpus,
        "prune_s": prunes,
        "median_wall_s": statistics.median(walls),
        "median_cpu_s": statistics.median(cpus),
        "target_s": TARGET_APPLY_S,
        "met": statistics.median(walls) < TARGET_APPLY_S,
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        result = run(args, Path(tmp))
    result["seconds"] = time.perf_counter() - started
    write_json(args.out_dir / f"apply{'-quick' if args.quick else ''}.json", result)
    print(f"({result['seconds'] / 60:.1f} min)")


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The whole bench in ``folder`` (a scratch directory); returns the JSON record."""
    data_cfg = data_config(args)
    base_cfg = TrainConfig(epochs=3 if args.quick else 8, lr=0.05, seed=args.seed)
    print(f"base model: {SPEC} on fashion-mnist ({data_cfg.train_subset} training images), cached in {args.cache_dir}")
    base, info = train_base_model(SPEC, data_cfg, base_cfg, args.cache_dir, progress=sys.stdout.isatty())
    print(f"  {'cached' if info['cached'] else 'trained'}: test acc {info['test_acc']:.4f}")
    device_file = careful_device(args.device, folder)
    device = load_device(device_file)
    lm = device.build()
    space = PruningSpace.build(base, torch.zeros(SHAPE))
    search_rows: list[dict[str, Any]] = []
    if args.policy is not None:
        policy = PruningPolicy.load(args.policy)  # its metadata names its own run folder
        print(f"policy from {args.policy}")
        if "run" not in policy.metadata:
            raise SystemExit(
                f"{args.policy} names no run folder (metadata.run); export it with prunepilot pareto RUN --export"
            )
        run_dir = Path(policy.metadata["run"])
        base_ms = statistics.median(measure(lm, base, args.latency_batch) for _ in range(3))  # the first is often cold
        target_ms = measure(lm, apply_policy(base, policy, torch.zeros(SHAPE), space=space), args.latency_batch)
    else:
        print(f"random search (prunepilot.search.run, local backend): {args.candidates} candidates, "
              f"budget {args.budget:.0%} of the base's latency")  # fmt: skip
        policy, search_rows, run_dir, base_ms = searched_policy(args, Path(info["checkpoint"]), device_file, folder)
        m = policy.metadata["metrics"]
        target_ms = float(m.get("measured_latency_ms") or m["latency_ms"])
    budget_ms = args.budget * base_ms
    uniform = with_run(uniform_at_latency(base, space, lm, target_ms, args.latency_batch), run_dir)
    print(
        f"policy: mean keep {policy.mean_keep():.3f} at {target_ms:.2f} ms; uniform at the same latency: "
        f"keep {uniform.mean_keep():.3f} ({uniform.metadata['metrics']['latency_ms']:.2f} ms)"
    )

    finetune = TrainConfig(epochs=args.epochs, lr=0.01, seed=args.seed)
    variants = [("policy", policy, False), ("policy + KD", policy, True),
                ("uniform", uniform, False), ("uniform + KD", uniform, True)]  # fmt: skip
    rows: list[dict[str, Any]] = []
    for name, pol, kd in variants:
        print(f"apply: {name} ({args.epochs} epoch(s) fine-tuning{', KD' if kd else ''})", flush=True)
        path = pol.save(folder / f"{name.replace(' ', '').replace('+', '-')}.json")
        cfg = ApplyConfig(
            policy=path, model=SPEC, checkpoint=Path(info["checkpoint"]), out=folder / f"out-{len(rows)}",
            data=data_cfg, train=finetune, distill=DistillConfig() if kd else None,
            export=("onnx", "torchscript") if name == "policy" else (),
        )  # fmt: skip
        result = apply_to_model(cfg, progress=sys.stdout.isatty())
        rep = result.report
        rows.append({"variant": name, "mean_keep": result.policy.mean_keep(), "macs": rep["macs"],
                     "params": rep["params"], "accuracy": rep["accuracy"], "latency": rep["latency"],
                     "exports": rep["exports"], "seconds": rep["seconds"],
                     "history": rep["steps"][-1].get("history")})  # fmt: skip
    print("timing apply on torchvision:resnet50 (224x224, no fine-tuning)", flush=True)
    r50 = time_resnet50_apply(folder, repeats=2 if args.quick else 3)

    record = {
        "benchmark": "apply",
        "quick": args.quick,
        "args": args_record(args),
        "base": {
            "test_acc": info["test_acc"],
            "val_acc": info["val_acc"],
            "latency_ms": base_ms,
            "budget_ms": budget_ms,
        },  # fmt: skip
        "policy": json.loads(policy.to_json()),
        "uniform_keep": uniform.mean_keep(),
        "search": search_rows,
        "variants": rows,
        "resnet50_apply": r50,
        "device": device.name,
        "device_settings": device.settings,
        "latency_batch": args.latency_batch,
        "versions": runtime_versions("torchvision", "onnx", "onnxruntime"),
        "machine": machine(),
    }
    record["table"] = apply_table(record)
    print_table(record["table"])
    return record


def yes_no(flag: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[flag]


def table_row(r: dict[str, Any]) -> list[Any]:
    """One table row from one entry of the JSON's ``variants`` (its own numbers, unformatted)."""
    acc, lat = r["accuracy"], r["latency"]
    return [r["variant"], r["mean_keep"], r["macs"]["ratio"], r["params"]["ratio"],
            acc["after_pruning_no_recalibration"], acc["after_pruning"], acc["after_finetuning"],
            lat["search"]["ms"], lat["pruned_ms"], lat["diff_pct"], yes_no(lat["within_10pct"]),
            lat.get("diff_pct_drift_corrected"), yes_no(lat.get("within_10pct_drift_corrected"))]  # fmt: skip


def apply_table(record: dict[str, Any]) -> dict[str, Any]:
    """The BENCHMARKS.md table for one ``apply*.json`` record (also what the script prints)."""
    args, base, variants, r50 = record["args"], record["base"], record["variants"], record["resnet50_apply"]
    first = variants[0]
    source = (f"a random search of {len(record['search'])} candidates" if str(args.get("policy")) in ("", "None")
              else str(args["policy"]))  # fmt: skip
    notes = [
        f"Base ResNet-20: test acc {first['accuracy']['before_pruning']:.4f}, {base['latency_ms']:.2f} ms, "
        f"{first['macs']['before'] / 1e6:.1f} MMACs, {first['params']['before'] / 1e3:.0f}k params; budget "
        f"{base['budget_ms']:.2f} ms. Policy from {source}; uniform: keep {record['uniform_keep']:.3f} at the "
        "policy's measured latency.",
        f"Fine-tuning {args.get('epochs', '?')} epoch(s) per variant (+ KD: logit distillation from the base); "
        "accuracies on the test split" + (" (quick: smaller subsets)." if record.get("quick") else "."),
    ]
    for check in next((v["exports"] for v in variants if v["exports"]), []):
        status = "ok" if check["ok"] else f"FAILED ({check['error']})"
        diff = f"{check['max_abs_diff']:.1e}" if check["max_abs_diff"] is not None else "-"
        notes.append(f"Export {check['format']}: {status}, max |diff| {diff} (tolerance {check['tolerance']:g}).")
    notes.append(
        f"Apply to torchvision:resnet50 (224x224, no fine-tune, {r50['groups']} groups): median "
        f"{r50['median_wall_s']:.2f} s wall, {r50['median_cpu_s']:.2f} s CPU over {len(r50['wall_s'])} runs (pruning "
        f"{statistics.median(r50['prune_s']):.2f} s) "
        f"-> target < {r50['target_s']:g} s {'MET' if r50['met'] else 'NOT met'}."
    )
    kinds = sorted({str(v["latency"].get("kind")) for v in variants})
    machine = record.get("machine", {})
    versions = record["versions"]
    notes += [
        f"Latency: {' and '.join(kinds)} on {record['device']} at batch {record['latency_batch']} (>= 1 s and 50 runs "
        "per figure); search ms: the figure the policy was picked at; applied ms: the applied model's; "
        f"target within ±{TARGET_LATENCY_PCT:g}%; drift-corrected: after dividing by the base model's slow-down "
        "since the search.",
        machine_note(machine.get("cpu"), machine.get("cores"), versions.get("platform"), versions),
    ]
    return result_table(
        "prunepilot apply: Fashion-MNIST ResNet-20, policy vs uniform at the same latency"
        + (" (quick)" if record.get("quick") else ""),
        COLUMNS,
        [table_row(v) for v in variants],
        notes,
    )


def print_table(table: dict[str, Any]) -> None:
    head = (f"{'variant':14} {'keep':>5} {'MACs':>6} {'params':>7} {'acc pruned':>10} {'acc +BN':>8} "
            f"{'acc FT':>7} {'search ms':>9} {'applied ms':>10} {'diff':>7} {'±10%':>5} {'corrected':>11}")  # fmt: skip
    print(f"\n== {table['title']}")
    print(head)
    print("-" * len(head))
    for variant, keep, macs, params, acc_raw, acc_bn, acc_ft, search_ms, ms, diff, ok, corr, corr_ok in table["rows"]:
        corrected = "-" if corr is None else f"{corr:+6.1f}% {corr_ok}"
        print(f"{variant:14} {keep:5.2f} {macs:6.2f} {params:7.2f} {acc_raw:10.4f} {acc_bn:8.4f} {acc_ft:7.4f} "
              f"{search_ms:9.2f} {ms:10.2f} {diff:+6.1f}% {ok:>5} {corrected:>11}")  # fmt: skip
    print("(keep: mean keep ratio; MACs, params: fraction of the base's)")
    print_notes(table["notes"])


if __name__ == "__main__":
    main()
