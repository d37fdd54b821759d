"""Measure the same model 5 times in one process: medians, spread (max/min - 1) and CVs.

The issue's acceptance: medians within 5% of each other on this machine, with the CV reported
for every figure. Runs both clocks (wall: time.perf_counter; thread: CPU time of the timing
thread, which other processes' time slices on a shared machine do not inflate).

    .venv/bin/python bench/measure_repeatability.py
    .venv/bin/python bench/measure_repeatability.py --models resnet56 --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from prunepilot.hw_models.base import runtime_versions
from prunepilot.hw_models.measure import TorchCPULatency, cpu_name


def build(spec: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    if spec.startswith("torchvision:"):
        import torchvision

        return getattr(torchvision.models, spec.split(":", 1)[1])(num_classes=1000), (1, 3, 224, 224)
    from prunepilot.models import build_model

    return build_model(spec), (1, 3, 32, 32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet56,torchvision:resnet18,torchvision:mobilenet_v2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clocks", default="wall,thread", help="comma-separated: wall, thread")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    clocks = [c for c in args.clocks.split(",") if c]
    print(f"{cpu_name()} ({os.cpu_count()} cores), torch threads {args.threads}, load average {os.getloadavg()[0]:.2f}")
    print(f"{'model':26} {'clock':6} {'medians (ms)':44} {'spread':>7}  CVs")
    rows = []
    for spec in args.models.split(","):
        model, shape = build(spec)
        model.eval()
        for clock in clocks:
            if clock == "thread" and args.threads != 1:
                continue
            lm = TorchCPULatency(threads=args.threads, clock=clock)
            res = [lm.measure_ms(model, shape) for _ in range(args.repeats)]
            med = [r.ms for r in res]
            spread = max(med) / min(med) - 1
            cvs = [r.cv or 0.0 for r in res]
            print(
                f"{spec:26} {clock:6} {', '.join(f'{m:.3f}' for m in med):44} {100 * spread:6.1f}%  "
                f"{', '.join(f'{c:.3f}' for c in cvs)}{'  (unstable flagged)' if any(r.unstable for r in res) else ''}"
            )
            rows.append(
                {
                    "model": spec,
                    "clock": clock,
                    "medians_ms": med,
                    "spread": spread,
                    "cvs": cvs,
                    "unstable": [r.unstable for r in res],
                    "details": dict(res[-1].details),
                }
            )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"measure_repeatability-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), "versions": runtime_versions(), "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
