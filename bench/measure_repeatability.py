"""Measure the same model 5 times in one process: medians, spread (max/min - 1) and CVs.

The issue's acceptance: medians within 5% of each other on this machine, with the CV reported
for every figure. Runs both clocks (wall: time.perf_counter; thread: CPU time of the timing
thread, which other processes' time slices on a shared machine do not inflate).

    .venv/bin/python bench/measure_repeatability.py [--out-dir bench/results]
    .venv/bin/python bench/measure_repeatability.py --models resnet56 --repeats 5 --threads 1

The JSON carries the printed table (:func:`repeatability_table`) for ``bench/report.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.common import RESULTS, args_record, machine_note, print_notes, result_table, stamp, timed_model, write_json
from prunepilot.hw_models.base import runtime_versions
from prunepilot.hw_models.measure import TorchCPULatency, cpu_name

TARGET_SPREAD = 0.05
COLUMNS = ["model", "clock", "repeats", "lowest median ms", "highest median ms", "spread %", "highest CV",
           "within 5%", "flagged unstable"]  # fmt: skip


def table_row(r: dict[str, Any]) -> list[Any]:
    """One table row from one entry of the JSON's ``rows`` (its own numbers, unformatted)."""
    return [r["model"], r["clock"], len(r["medians_ms"]), min(r["medians_ms"]), max(r["medians_ms"]),
            100 * r["spread"], max(r["cvs"]), "yes" if r["spread"] <= TARGET_SPREAD else "NO",
            sum(bool(u) for u in r["unstable"])]  # fmt: skip


def repeatability_table(record: dict[str, Any]) -> dict[str, Any]:
    """The BENCHMARKS.md table for one ``measure_repeatability-*.json`` record (also what the script prints)."""
    args, rows = record["args"], record["rows"]
    versions = record["versions"]
    # older records name the CPU only in each measurement's details
    cpu = record.get("cpu") or next((r["details"].get("device") for r in rows if r.get("details")), "?")
    load = record.get("load_average")
    met = sum(r["spread"] <= TARGET_SPREAD for r in rows)
    notes = [
        f"Latency: measured (torch eager CPU, {args['threads']} thread(s), batch 1), each model measured "
        f"{args['repeats']} times in one process; wall: time.perf_counter; thread: CPU time of the timing thread, "
        "which other processes' time slices do not inflate. Spread: highest/lowest median - 1.",
        f"Target: medians within {100 * TARGET_SPREAD:.0f}% of each other: met by {met} of {len(rows)} rows.",
        machine_note(
            cpu,
            record.get("cores"),
            versions.get("platform"),
            versions,
            f"; load average {load[0]:.2f} before, {load[1]:.2f} after" if load else "",
        ),
    ]
    return result_table(
        "Latency measurement repeatability (same model, one process)", COLUMNS, [table_row(r) for r in rows], notes
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet56,torchvision:resnet18,torchvision:mobilenet_v2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clocks", default="wall,thread", help="comma-separated: wall, thread")
    ap.add_argument("--out-dir", "--out", dest="out_dir", type=Path, default=RESULTS, help="folder for the JSON result")
    args = ap.parse_args()
    clocks = [c for c in args.clocks.split(",") if c]
    load_before = os.getloadavg()[0]
    print(f"{cpu_name()} ({os.cpu_count()} cores), torch threads {args.threads}, load average {load_before:.2f}")
    print(f"{'model':26} {'clock':6} {'medians (ms)':44} {'spread':>7}  CVs")
    rows = []
    for spec in args.models.split(","):
        model, shape = timed_model(spec)
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
    load_after = os.getloadavg()[0]
    record: dict[str, Any] = {
        "benchmark": "measure_repeatability",
        "args": args_record(args),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average": [load_before, load_after],
        "versions": runtime_versions(),
        "rows": rows,
    }
    record["table"] = repeatability_table(record)
    print(f"\n{'model':26} {'clock':6} {'repeats':>7} {'low ms':>8} {'high ms':>8} {'spread':>7} {'max CV':>7} "
          f"{'<=5%':>5} {'flagged':>7}")  # fmt: skip
    for model, clock, repeats, low, high, spread, cv, ok, flagged in record["table"]["rows"]:
        print(f"{model:26} {clock:6} {repeats:>7} {low:8.3f} {high:8.3f} {spread:6.1f}% {cv:7.3f} {ok:>5} "
              f"{flagged:>7}")  # fmt: skip
    print_notes(record["table"]["notes"])
    write_json(args.out_dir / f"measure_repeatability-{stamp()}.json", record)


if __name__ == "__main__":
    main()
