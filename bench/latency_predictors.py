"""How well do prunepilot's latency predictors match measured latency on this machine's CPU?

For each model: profile a lookup table, measure ``--calib`` + ``--samples`` random pruning
policies (torch eager CPU, ``--threads``), fit the calibrated predictors on the ``--calib``
ones, and print for every latency model MAPE, share within ±5% / ±10%, Spearman, the false
"within budget" rate (budget = median measured), predictions/s, plus the measurement's own
repeatability (the ceiling) and measurements/s. Writes JSON to bench/results/.

    .venv/bin/python bench/latency_predictors.py            # 50 policies x 3 models
    .venv/bin/python bench/latency_predictors.py --quick    # a few minutes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from prunepilot.hw_models.base import runtime_versions
from prunepilot.hw_models.hweval import HwEvalReport, HwEvalSettings, run_hw_eval
from prunepilot.hw_models.lut_profile import DEFAULT_FRACTIONS, profile_model
from prunepilot.hw_models.measure import TorchCPULatency, cpu_name

TARGET_WITHIN_10 = 0.90
TARGET_SPEARMAN = 0.95


def build(spec: str) -> tuple[torch.nn.Module, tuple[int, ...], str]:
    """The model, its input shape and a note on how it was built."""
    try:
        from prunepilot.models import build_model
    except ImportError:
        build_model = None
    if spec.startswith("torchvision:"):
        import torchvision

        name = spec.split(":", 1)[1]
        return getattr(torchvision.models, name)(num_classes=1000), (1, 3, 224, 224), "torchvision, 1000 classes"
    if build_model is None:
        raise SystemExit(f"{spec}: prunepilot.models.build_model is missing; only torchvision:NAME models can run")
    return build_model(spec), (1, 3, 32, 32), "prunepilot.models zoo, 10 classes"


def print_report(rep: HwEvalReport, profile_s: float) -> None:
    head = (
        f"{'latency model':24} {'MAPE':>7} {'±5%':>6} {'±10%':>6} {'Spearman':>8} {'false-in':>8} "
        f"{'pred/s':>8} {'(cpu)':>8}"
    )
    print(
        f"\n== {rep.model}  input {'x'.join(map(str, rep.input_shape))}  "
        f"({len(rep.measured_ms)} scored candidates, measured {min(rep.measured_ms):.2f}-{max(rep.measured_ms):.2f} ms)"
    )
    print(head)
    print("-" * len(head))
    for name, m in rep.metrics.items():
        print(
            f"{name:24} {100 * m.mape:6.1f}% {100 * m.within_5:5.0f}% {100 * m.within_10:5.0f}% "
            f"{m.spearman:8.3f} {100 * m.false_within_budget:7.0f}% {rep.predictions_per_s[name]:8.0f} "
            f"{rep.predictions_per_cpu_s[name]:8.0f}"
        )
    r = rep.repeatability
    print(
        f"measurement: {rep.measurements_per_s:.1f} measurements/s ({rep.prune_and_measure_per_s:.2f}/s with pruning); "
        f"median per-candidate CV {rep.candidate_cv_median:.3f}"
    )
    print(
        f"repeatability (full model x{len(r['medians_ms'])}): medians "
        f"{', '.join(f'{v:.2f}' for v in r['medians_ms'])} ms; spread {100 * r['spread']:.1f}%; "
        f"CVs {', '.join(f'{v:.3f}' for v in r['cvs'])}"
    )
    best = max(rep.metrics.items(), key=lambda kv: (kv[1].within_10, kv[1].spearman))
    ok = best[1].within_10 >= TARGET_WITHIN_10 and best[1].spearman >= TARGET_SPEARMAN
    print(
        f"best: {best[0]} (±10% {100 * best[1].within_10:.0f}%, Spearman {best[1].spearman:.3f}) -> "
        f"target {'MET' if ok else 'NOT met'}; LUT profile took {profile_s:.0f} s"
    )


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
    ap.add_argument("--out", default="bench/results", help="folder for the JSON result")
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
        model, shape, note = build(spec)
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
        print_report(rep, profile_s)
        results.append(
            {
                **rep.to_dict(),
                "build": note,
                "lut_profile_seconds": profile_s,
                "lut_meta": {k: v for k, v in lut.meta.items() if k != "versions"},
            }
        )
    load_after = os.getloadavg()
    print(f"\nload average at the end {load_after[0]:.2f} (2 shared cores: other processes add noise)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"latency_predictors-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {
                "args": vars(args),
                "cpu": cpu_name(),
                "versions": runtime_versions(),
                "load_average": [load_before, load_after],
                "results": results,
            },
            indent=1,
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
