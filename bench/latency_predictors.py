"""How well do prunepilot's latency predictors match measured latency on this machine's CPU?

For each model: profile a lookup table, measure ``--calib`` + ``--samples`` random pruning
policies (torch eager CPU, ``--threads``), fit the calibrated predictors on the ``--calib``
ones, and print for every latency model MAPE, share within ±5% / ±10%, Spearman, the false
"within budget" rate (budget = median measured), predictions/s, plus the measurement's own
repeatability (the ceiling) and measurements/s. Writes JSON to ``--out-dir`` (default
bench/results/), carrying the printed table (:func:`predictors_table`) for ``bench/report.py``.

    .venv/bin/python bench/latency_predictors.py            # 50 policies x 3 models
    .venv/bin/python bench/latency_predictors.py --quick    # a few minutes
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.common import RESULTS, args_record, machine_note, result_table, stamp, timed_model, write_json
from prunepilot.hw_models.base import runtime_versions
from prunepilot.hw_models.hweval import HwEvalSettings, run_hw_eval
from prunepilot.hw_models.lut_profile import DEFAULT_FRACTIONS, profile_model
from prunepilot.hw_models.measure import TorchCPULatency, cpu_name

TARGET_WITHIN_10 = 0.90
TARGET_SPEARMAN = 0.95
COLUMNS = ["model", "latency model", "MAPE %", "within ±5% (%)", "within ±10% (%)", "Spearman",
           "false within budget (%)", "predictions/s", "predictions/CPU s"]  # fmt: skip


def model_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Table rows for one entry of the JSON's ``results`` (one model; its own numbers, as percentages)."""
    return [
        [result["model"], name, 100 * m["mape"], 100 * m["within_5"], 100 * m["within_10"], m["spearman"],
         100 * m["false_within_budget"], result["predictions_per_s"][name], result["predictions_per_cpu_s"][name]]
        for name, m in result["metrics"].items()
    ]  # fmt: skip


def model_notes(result: dict[str, Any]) -> list[str]:
    """Measurement ceiling and verdict for one model (from its JSON entry)."""
    r, measured = result["repeatability"], result["measured_ms"]
    name, best = max(result["metrics"].items(), key=lambda kv: (kv[1]["within_10"], kv[1]["spearman"]))
    ok = best["within_10"] >= TARGET_WITHIN_10 and best["spearman"] >= TARGET_SPEARMAN
    return [
        f"{result['model']} (input {'x'.join(map(str, result['input_shape']))}, {result.get('build', '')}): "
        f"{len(measured)} scored candidates measured {min(measured):.2f}-{max(measured):.2f} ms; "
        f"{result['measurements_per_s']:.1f} measurements/s ({result['prune_and_measure_per_s']:.2f}/s with "
        f"pruning); median per-candidate CV {result['candidate_cv_median']:.3f}; full model measured "
        f"{len(r['medians_ms'])} times: spread {100 * r['spread']:.1f}% (the ceiling for any predictor); LUT "
        f"profile {result.get('lut_profile_seconds', float('nan')):.0f} s.",
        f"{result['model']}: best {name} (±10% {100 * best['within_10']:.0f}%, Spearman {best['spearman']:.3f}) -> "
        f"target (±10% >= {100 * TARGET_WITHIN_10:.0f}%, Spearman >= {TARGET_SPEARMAN}) "
        f"{'MET' if ok else 'NOT met'}.",
    ]


def predictors_table(record: dict[str, Any]) -> dict[str, Any]:
    """The BENCHMARKS.md table for one ``latency_predictors-*.json`` record (also what the script prints)."""
    args, results = record["args"], record["results"]
    versions = record["versions"]
    notes = [note for result in results for note in model_notes(result)]
    measured_with = results[0]["measured_with"]["name"] if results else "?"
    load = record.get("load_average")
    notes += [
        f"Latency: every row is a predictor (predicted) scored against latency measured with {measured_with} "
        f"({args['threads']} thread(s), {args['clock']} clock, lowest of {args['rounds']} round medians per "
        f"candidate); {args['calib']} extra policies calibrate the calibrated predictors; false within budget: "
        "share of candidates measured over the budget (the median measured) that the predictor puts within it"
        + (" (quick run)." if args.get("quick") else "."),
        machine_note(
            record.get("cpu"),
            record.get("cores"),
            versions.get("platform"),
            versions,
            f"; load average {load[0][0]:.2f} before, {load[1][0]:.2f} after" if load else "",
        ),
    ]
    return result_table(
        "Latency predictors vs measured latency (torch eager CPU)" + (" (quick)" if args.get("quick") else ""),
        COLUMNS,
        [row for result in results for row in model_rows(result)],
        notes,
    )


def print_report(result: dict[str, Any]) -> None:
    head = (
        f"{'latency model':24} {'MAPE':>7} {'±5%':>6} {'±10%':>6} {'Spearman':>8} {'false-in':>8} "
        f"{'pred/s':>8} {'(cpu)':>8}"
    )
    print(f"\n== {result['model']}")
    print(head)
    print("-" * len(head))
    for _model, name, mape, w5, w10, rho, false_in, per_s, per_cpu_s in model_rows(result):
        print(
            f"{name:24} {mape:6.1f}% {w5:5.0f}% {w10:5.0f}% {rho:8.3f} {false_in:7.0f}% {per_s:8.0f} {per_cpu_s:8.0f}"
        )
    for note in model_notes(result):
        print(note)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=50, help="scored random policies per model")
    ap.add_argument("--calib", type=int, default=10, help="extra policies used to calibrate (<= 10)")
    ap.add_argument("--models", default="resnet56,torchvision:resnet18,torchvision:mobilenet_v2")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds per candidate")
    ap.add_argument("--lut-rounds", type=int, default=2, help="interleaved timing rounds per LUT grid point")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--clock",
        choices=("wall", "thread"),
        default="thread",
        help="wall: time.perf_counter; thread: CPU time of the timing thread (1 thread only), "
        "which other processes' time slices on this shared machine do not inflate",
    )
    ap.add_argument("--quick", action="store_true", help="12 samples, 5 calib, 1 round: a smoke run")
    ap.add_argument("--out-dir", "--out", dest="out_dir", type=Path, default=RESULTS, help="folder for the JSON result")
    args = ap.parse_args()
    if args.quick:
        args.samples, args.calib, args.rounds, args.lut_rounds = min(args.samples, 12), 5, 1, 1

    settings = HwEvalSettings(samples=args.samples, calib=args.calib, rounds=args.rounds, seed=args.seed)
    measurer = TorchCPULatency(threads=args.threads, clock=args.clock)
    load_before = os.getloadavg()
    print(
        f"prunepilot latency predictors on {cpu_name()} ({os.cpu_count()} cores), torch threads {args.threads}; "
        f"clock {args.clock}; load average {load_before[0]:.2f}"
    )
    results = []
    for spec in [s.strip() for s in args.models.split(",") if s.strip()]:
        model, shape = timed_model(spec)
        note = "torchvision, 1000 classes" if spec.startswith("torchvision:") else "prunepilot.models zoo, 10 classes"
        model.eval()
        t0 = time.perf_counter()
        lut = profile_model(
            model,
            shape,
            device="local-cpu",
            model_spec=spec,
            threads=args.threads,
            fractions=DEFAULT_FRACTIONS,
            extra_samples=2 if args.quick else 6,
            rounds=args.lut_rounds,
            clock=args.clock,
            progress=sys.stderr.isatty(),
        )
        profile_s = time.perf_counter() - t0
        rep = run_hw_eval(
            model, shape, measurer, settings, model_name=spec, lut=lut, log=lambda m: print("  " + m, file=sys.stderr)
        )
        results.append(
            {
                **rep.to_dict(),
                "build": note,
                "lut_profile_seconds": profile_s,
                "lut_meta": {k: v for k, v in lut.meta.items() if k != "versions"},
            }
        )
        print_report(results[-1])
    load_after = os.getloadavg()
    print(f"\nload average at the end {load_after[0]:.2f} (2 shared cores: other processes add noise)")
    record = {
        "benchmark": "latency_predictors",
        "args": args_record(args),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "versions": runtime_versions(),
        "load_average": [load_before, load_after],
        "results": results,
    }
    record["table"] = predictors_table(record)
    write_json(args.out_dir / f"latency_predictors-{stamp()}.json", record)


if __name__ == "__main__":
    main()
