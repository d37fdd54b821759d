"""How fast a search scores candidates, and how close its in-loop latency is to measured (#15).

Side by side in one run, on the same machine, for each model (zoo ResNet-20 and torchvision
mobilenet_v2 with its stem adapted to 1x28x28, both on Fashion-MNIST), a ``random`` search of
``--evaluations`` candidates through ``prunepilot.search.run`` on Ray, 2 trials at once on 2 CPUs,
along each scoring path:

* ``old``: today's path before #15: every candidate deep-copied and pruned by Torch-Pruning
  (``evaluation.scoring: prune``), BN-recalibrated, scored, and its latency measured in the loop
  (``evaluation.in_loop_latency: measured``);
* ``new``: the candidate's channels sliced from a once-reordered copy of the base
  (``scoring: slice``), BN-recalibrated, scored, and its latency predicted by the lookup table
  profiled for this model on this device when the search starts (``in_loop_latency: predicted``,
  ``in_loop_predictor: lut``);
* ``new-fit``: as ``new`` with the affine MACs + bytes fit as the in-loop predictor
  (``in_loop_predictor: fit``), for comparison.

``candidates_per_s`` is the number of candidates over the wall-clock span of the trials (first
to last reported candidate; set-up and calibration are reported apart, as ``prepare_s``).
Afterwards every candidate of the ``new`` paths is measured on the device (the apply path's
physically pruned model) in ``--rounds`` interleaved rounds, and the median is the measured
figure its in-loop prediction is judged against: ``within_10pct_share`` (|predicted/measured - 1|
<= 0.10) and the Spearman rank correlation. Targets (#15): ``speedup`` >= 10 on ResNet-20;
``within_10pct_share`` >= 0.9 and ``spearman`` >= 0.95.

Writes ``scoring_speed.json`` (``--out``) with, per model, ``old_candidates_per_s``,
``new_candidates_per_s``, ``speedup``, ``within_10pct_share`` and ``spearman``, plus a table for
``bench/report.py``.

    python bench/scoring_speed.py --data-root PATH            # ~15 minutes on 2 cores
    python bench/scoring_speed.py --quick                     # a smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.bases.load import BASES, BASES_DIR, base_info, load_base
from bench.common import args_record, dated_results, machine, machine_note, print_result_table, result_table, write_json
from prunepilot.errors import CheckpointError
from prunepilot.hw_models.base import runtime_versions
from prunepilot.search.records import Candidate

#: every path scores by bn-recal, the protocol #15 measured (the default is now ``auto``: head-refit
#: on these models, which the ``new-head-refit`` path times on the same sliced copy)
PATHS: dict[str, dict[str, str]] = {
    "old": {"protocol": "bn-recal", "scoring": "prune", "in_loop_latency": "measured"},
    "new": {"protocol": "bn-recal", "scoring": "slice", "in_loop_latency": "predicted", "in_loop_predictor": "lut"},
    "new-fit": {"protocol": "bn-recal", "scoring": "slice", "in_loop_latency": "predicted", "in_loop_predictor": "fit"},
    "new-head-refit": {
        "protocol": "head-refit",
        "scoring": "slice",
        "in_loop_latency": "predicted",
        "in_loop_predictor": "lut",
    },
}
TARGET_SPEEDUP = 10.0
TARGET_WITHIN = 0.9
TARGET_SPEARMAN = 0.95
COLUMNS = ["model", "path", "candidates", "candidates/s", "speedup", "s/candidate", "prepare s",
           "within ±10%", "spearman", "max |err| %", "within ±10% of base share", "meas. spread %",
           "load avg"]  # fmt: skip


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=os.environ.get("PRUNEPILOT_DATA"), help="Fashion-MNIST root")
    ap.add_argument("--models", default="resnet20,mobilenet_v2", help="comma-separated: resnet20, mobilenet_v2")
    ap.add_argument("--evaluations", type=int, default=None, help="candidates per search (default 40; quick 8)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds per candidate")
    ap.add_argument("--device", default="local-cpu-cputime", help="the measured device (thread-CPU clock)")
    ap.add_argument("--batch", type=int, default=16, help="latency batch size (16: compute, not overhead, dominates)")
    ap.add_argument("--val-subset", type=int, default=1000, help="held-out images scored per candidate")
    ap.add_argument(
        "--budget",
        type=float,
        default=0.7,
        help="budget as a fraction of the base's latency (proposals are not projected into it, so it only has "
        "to be reachable: at batch 16 the all-lower-bound ResNet-20 is ~50%% of the base)",
    )
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/prunepilot"), help="stand-in base cache")
    ap.add_argument("--quick", action="store_true", help="8 candidates, ResNet-20 only: a smoke run")
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default bench/results/<today>/)")
    args = ap.parse_args()
    if not args.data_root:
        ap.error("set PRUNEPILOT_DATA or --data-root to the folder holding FashionMNIST/raw")
    args.evaluations = args.evaluations or (8 if args.quick else 40)
    if args.quick:
        args.models = "resnet20"
    return args


def model_section(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The search's model section: the committed base when there is one (sha256 checked), else a
    briefly trained stand-in (speed and latency do not depend on the weights). Returns it and a note."""
    spec = BASES[name]
    try:
        load_base(name)
    except CheckpointError:
        train = {"epochs": 1, "lr": 0.05, "seed": 0, "max_batches_per_epoch": 50}
        section = {"spec": spec, "train": train, "cache_dir": str(args.cache_dir)}
        return section, f"{name}: no committed base; a stand-in trained 50 batches (speed and latency only)"
    info = base_info(name)
    return {"spec": spec, "checkpoint": str(BASES_DIR / info["checkpoint"])}, f"{name}: the committed base"


def search_config(name: str, path: str, args: argparse.Namespace, model: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"speed-{name}-{path}",
        "seed": 0,
        "model": model,
        "data": {"name": "fashion-mnist", "root": args.data_root, "val_size": 5000, "seed": 0,
                 "val_subset": args.val_subset, "calib_size": 256, "batch_size": 64, "eval_batch_size": 250},
        "device": {"name": args.device, "batch_size": args.batch},
        "budget": {"fraction": args.budget},
        "evaluation": {"importance": "l1", "lower_bound": 0.2, "bn_batches": 4, "uniform_baseline": 0,
                       "remeasure_top": 0, **PATHS[path]},
        # unprojected: the candidates span the latency range (projected ones all sit at the budget,
        # where a rank correlation measures nothing); the same proposals for every path
        "strategy": {"name": "random", "evaluations": args.evaluations, "settings": {"project": False}},
        "ray": {"num_cpus": 2, "max_concurrent": 2, "cpus_per_trial": 1},
    }  # fmt: skip


def throughput(cands: list[Candidate]) -> float:
    """Candidates per second over the span of their reports (n - 1 intervals; 0 with < 2)."""
    times = sorted(c.wall_time for c in cands)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else 0.0


def measured_medians(
    cfg: dict[str, Any], cands: list[Candidate], rounds: int
) -> tuple[list[float], list[float], float]:
    """Each candidate's physically pruned model measured on the device, and the base model beside
    them, in ``rounds`` interleaved rounds (every model once per round). Returns the median per
    candidate, the spread of its rounds relative to it ((max - min) / median: how far the
    measurement itself moves) and the base model's median."""
    from prunepilot.search.config import validate_config
    from prunepilot.search.evaluator import get_evaluator

    ev = get_evaluator(validate_config(cfg))
    models = [ev.model, *(ev.prune(c.policy) for c in cands)]
    samples: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for i, model in enumerate(models):
            samples[i].append(float(ev.latency.measure_ms(model, ev.input_shape, ev.batch_size).ms))
    medians = [statistics.median(s) for s in samples]
    spread = [(max(s) - min(s)) / m for s, m in zip(samples[1:], medians[1:], strict=True)]
    return medians[1:], spread, medians[0]


def predicted_base_ms(cfg: dict[str, Any], run_dir: Path) -> float:
    """The search's in-loop predictor at full width (the base model), from its run.json."""
    from prunepilot.search.config import validate_config
    from prunepilot.search.evaluator import get_evaluator
    from prunepilot.search.inloop import InLoopPredictor
    from prunepilot.search.store import RunStore

    ev = get_evaluator(validate_config(cfg))
    predictor = InLoopPredictor.from_json(RunStore(run_dir).read_info()["in_loop_latency"]["predictor"])
    return float(predictor.predict_ms(ev.space, ev.space.full_widths(), ev.batch_size).ms)


def accuracy_of_predictor(predicted: list[float], measured: list[float]) -> dict[str, float]:
    from scipy.stats import spearmanr

    errors = [p / m - 1.0 for p, m in zip(predicted, measured, strict=True)]
    rho = float(spearmanr(predicted, measured).statistic) if len(predicted) > 2 else float("nan")
    return {
        "within_10pct_share": sum(abs(e) <= 0.10 for e in errors) / len(errors),
        "spearman": rho,
        "max_abs_err_pct": 100 * max(abs(e) for e in errors),
        "median_abs_err_pct": 100 * statistics.median(abs(e) for e in errors),
    }


def run_model(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    import prunepilot.search

    model, note = model_section(name, args)
    out: dict[str, Any] = {"paths": {}}
    for path in PATHS:
        cfg = search_config(name, path, args, model)
        print(f"{name} / {path}: {args.evaluations} candidates ...", flush=True)
        t0, load0 = time.perf_counter(), os.getloadavg()[0]
        result = prunepilot.search.run(cfg, backend="ray", run_dir=args.work / f"{name}-{path}", progress=False)
        wall = time.perf_counter() - t0
        cands = sorted(result.candidates, key=lambda c: c.wall_time)
        if len(cands) < 2:
            raise SystemExit(f"{name} / {path}: {len(cands)} candidate(s), {result.failed_trials} failed trial(s)")
        rate = throughput(cands)
        rec: dict[str, Any] = {
            "candidates": len(cands),
            "candidates_per_s": rate,
            "eval_seconds_median": statistics.median(c.metrics.eval_seconds for c in cands),
            "search_wall_s": wall,
            "prepare_s": wall - (cands[-1].wall_time - cands[0].wall_time if len(cands) > 1 else 0.0),
            "latency_kinds": sorted({c.metrics.latency_kind for c in cands}),
            # the machine's 1-minute load average before and after: others' work slows a path down
            "load_average": [load0, os.getloadavg()[0]],
        }
        if path != "old":
            measured, spread, base_ms = measured_medians(cfg, cands, args.rounds)
            predicted = [c.metrics.latency_ms for c in cands]
            rec.update(accuracy_of_predictor(predicted, measured))
            rec["measurement_spread_pct_median"] = 100 * statistics.median(spread)
            # Side by side with the base in the same rounds: the share of the base's latency, which
            # machine-wide drift between calibration and this check does not move.
            pred_base = predicted_base_ms(cfg, result.run_dir)
            rel = accuracy_of_predictor([p / pred_base for p in predicted], [m / base_ms for m in measured])
            rec["vs_base"] = {**rel, "predicted_base_ms": pred_base, "measured_base_ms": base_ms}
            rec["points"] = [{"predicted_ms": p, "measured_ms": m} for p, m in zip(predicted, measured, strict=True)]
        out["paths"][path] = rec
        print(f"  {rate:.2f} candidates/s ({wall:.0f} s in all)", flush=True)
    old, new = out["paths"]["old"], out["paths"]["new"]
    out.update(
        old_candidates_per_s=old["candidates_per_s"],
        new_candidates_per_s=new["candidates_per_s"],
        speedup=new["candidates_per_s"] / old["candidates_per_s"] if old["candidates_per_s"] else float("nan"),
        within_10pct_share=new["within_10pct_share"],
        spearman=new["spearman"],
    )
    return out, note


def speed_table(record: dict[str, Any]) -> dict[str, Any]:
    """The BENCHMARKS.md table for a ``scoring_speed.json`` record (also what the script prints)."""
    rows = []
    for name, res in record["models"].items():
        for path, p in res["paths"].items():
            speed = p["candidates_per_s"] / res["old_candidates_per_s"] if res["old_candidates_per_s"] else None
            fit = [
                p.get("within_10pct_share"),
                p.get("spearman"),
                p.get("max_abs_err_pct"),
                p.get("vs_base", {}).get("within_10pct_share"),
                p.get("measurement_spread_pct_median"),
                statistics.mean(p["load_average"]) if "load_average" in p else None,
            ]
            rows.append([name, path, p["candidates"], p["candidates_per_s"], speed, p["eval_seconds_median"],
                         p["prepare_s"], *fit])  # fmt: skip
    args = record["args"]
    notes = [
        *record["notes"],
        f"A random search of {args['evaluations']} candidates per path on Ray, 2 trials at once on 2 CPUs; device "
        f"{args['device']} at batch {args['batch']}; {args['val_subset']} held-out training images per candidate, "
        "4 BN-recalibration batches of 64.",
        "old: prune a copy (Torch-Pruning) + measured latency per candidate; new: slice a once-reordered copy + "
        "latency predicted by the LUT profiled at search start; new-fit: slice + the MACs/bytes fit.",
        f"within ±10% and spearman: in-loop (predicted) latency against the median of {args['rounds']} interleaved "
        "measurements of each candidate's pruned model, taken after the searches; meas. spread: the median "
        "(max - min) / median of those rounds, the measurement's own movement on this machine; within ±10% of "
        "base share: the same check on latency as a share of the base model's, predicted vs measured beside "
        "the candidates in the same rounds (what machine-wide drift since the calibration does not move).",
        f"Targets: speedup >= {TARGET_SPEEDUP:g} on ResNet-20; within ±10% >= {TARGET_WITHIN:g}; spearman >= "
        f"{TARGET_SPEARMAN:g}.",
        machine_note(record["machine"]["cpu"], record["machine"]["cores"], record["machine"]["platform"],
                     record["versions"]),
    ]  # fmt: skip
    return result_table("Scoring speed and in-loop latency (#15)", COLUMNS, rows, notes)


def main() -> None:
    import tempfile

    args = parse_args()
    started = time.perf_counter()
    models: dict[str, Any] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        args.work = Path(tmp)
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            if name not in BASES:
                raise SystemExit(f"unknown model {name!r}; choose from {sorted(BASES)}")
            models[name], note = run_model(name, args)
            notes.append(note)
        del args.work
    record: dict[str, Any] = {
        "benchmark": "scoring_speed",
        "args": args_record(args),
        "models": models,
        "notes": notes,
        "machine": machine(),
        "versions": runtime_versions("torchvision"),
        "threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - started,
    }
    out = args.out or dated_results() / f"scoring_speed{'-quick' if args.quick else ''}.json"
    write_json(out, record, quiet=True)  # the figures first: a table that fails to build loses nothing
    record["table"] = speed_table(record)
    write_json(out, record)
    print_result_table(record["table"])


if __name__ == "__main__":
    main()
