"""Run every benchmark, one after another, then regenerate BENCHMARKS.md from their JSON.

    PRUNEPILOT_DATA=/path/to/data python bench/run_all.py --quick   # ~20 minutes on 2 cores
    PRUNEPILOT_DATA=/path/to/data python bench/run_all.py           # the full run

Benchmarks run sequentially (never two at once: they measure latency on this machine) and
write into ``bench/results/<date>/`` (``<date>-quick/`` with ``--quick``, so a smoke run never
overwrites a full result; BENCHMARKS.md shows a full result over a quick one). A benchmark that
fails is reported and the others still run; the exit code is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: (script, quick args, full args); ``{out}`` is the results folder of this run. The sizes are
#: chosen to fit this 2-core machine: --quick in about 20 minutes (measured 21.5 min on a quiet
#: machine before oneshot's fine-tunes went from 3 seeds to 1, about 2 minutes less), the full
#: run in about 90 (estimated from its parts' measured times; not yet timed end to end). Each
#: script's own defaults are larger: run a script alone for its full-size figures.
BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    ("analytic_costs.py", ["--quick", "--out-dir", "{out}"], ["--out-dir", "{out}"]),
    ("measure_repeatability.py", ["--out-dir", "{out}"], ["--out-dir", "{out}"]),
    ("latency_predictors.py", ["--quick", "--out-dir", "{out}"], ["--out-dir", "{out}"]),
    (
        "search_throughput.py",
        ["--evaluations", "12", "--out-dir", "{out}"],
        ["--evaluations", "24", "--out-dir", "{out}"],
    ),
    ("amc.py", ["--quick", "--out-dir", "{out}"], ["--episodes", "60", "--out-dir", "{out}"]),
    ("oneshot.py", ["--quick", "--ft-seeds", "1", "--out", "{out}"], ["--quick", "--out", "{out}"]),
    ("apply.py", ["--quick", "--out-dir", "{out}"], ["--quick", "--epochs", "2", "--out-dir", "{out}"]),
    (
        "search_quality.py",
        ["--quick", "--out", "{out}"],
        ["--evaluations", "12", "--finetune-batches", "60", "--out", "{out}"],
    ),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the ~20-minute configuration of every benchmark")
    ap.add_argument("--only", default=None, help="comma-separated script names to run")
    args = ap.parse_args()
    out = HERE / "results" / (datetime.now().strftime("%Y-%m-%d") + ("-quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for script, quick, full in BENCHMARKS:
        if args.only and script.removesuffix(".py") not in args.only.split(","):
            continue
        extra = [a.format(out=out) for a in (quick if args.quick else full)]
        cmd = [sys.executable, str(HERE / script), *extra]
        print(f"\n=== {script} {' '.join(extra)}", flush=True)
        start = time.time()
        code = subprocess.call(cmd)
        print(f"=== {script}: exit {code} after {time.time() - start:.0f} s", flush=True)
        if code != 0:
            failed.append(script)
    subprocess.call(
        [
            sys.executable,
            str(HERE / "report.py"),
            "--results",
            str(HERE / "results"),
            "--out",
            str(HERE.parent / "BENCHMARKS.md"),
        ]
    )
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
