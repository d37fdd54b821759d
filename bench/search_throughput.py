"""Search throughput and memory: 1 vs 2 concurrent trials on a local Ray with 2 CPUs.

Runs the quickstart search (random strategy) twice, with ``ray.max_concurrent`` 1 and 2, and
prints candidates evaluated per second (from the candidates' own timestamps, so driver
start-up and base-model preparation are excluded) and the peak resident memory of the
driver plus every process it started (Ray's GCS, raylet and workers), sampled every 0.2 s.

    python bench/search_throughput.py [--evaluations 24] [--config configs/quickstart.yaml] [--out-dir DIR]

Targets (issue 6): 2 trials >= 1.6x the rate of 1; peak memory < 4 GiB. Writes
``search_throughput.json`` to ``--out-dir`` (default ``bench/results/<date>/``), carrying the
printed table (:func:`throughput_table`) for ``bench/report.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.common import dated_results, machine_note, print_notes, result_table, write_json
from prunepilot.hw_models.base import runtime_versions
from prunepilot.hw_models.measure import cpu_name
from prunepilot.search.config import load_config

TARGET_SPEEDUP = 1.6
TARGET_PEAK_GIB = 4.0
COLUMNS = ["concurrent trials", "candidates", "candidates/s", "total s", "peak memory GiB", "latency"]


def tree_rss() -> int:
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


def run(config: Path, concurrent: int, evaluations: int) -> dict[str, Any]:
    from prunepilot.search.runner import run_search  # imports Ray: only when a search runs

    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], tree_rss())

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            config,
            {"ray.max_concurrent": concurrent, "strategy.evaluations": evaluations, "strategy.name": "random"},
        )
        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        start = time.time()
        result = run_search(cfg, Path(tmp) / "run", progress=False)
        total = time.time() - start
        done.set()
        watcher.join()
    times = sorted(c.wall_time for c in result.candidates)
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")
    kinds = sorted({c.metrics.latency_kind for c in result.candidates})
    return {
        "concurrent": concurrent,
        "candidates": len(times),
        "rate_per_s": rate,
        "total_s": total,
        "peak_rss_gib": peak[0] / 2**30,
        "latency_kind": " and ".join(kinds) or None,
    }


def table_row(r: dict[str, Any]) -> list[Any]:
    """One table row from one entry of the JSON's ``rows`` (its own numbers, unformatted)."""
    return [r["concurrent"], r["candidates"], r["rate_per_s"], r["total_s"], r["peak_rss_gib"], r.get("latency_kind")]


def throughput_table(record: dict[str, Any]) -> dict[str, Any]:
    """The BENCHMARKS.md table for one ``search_throughput.json`` record (also what the script prints)."""
    rows, speedup = record["rows"], record["speedup"]
    peak = max(r["peak_rss_gib"] for r in rows)
    versions = record.get("versions", {})
    kinds = sorted({str(r["latency_kind"]) for r in rows if r.get("latency_kind")})
    notes = [
        f"Speed-up 2 vs 1 concurrent trials: {speedup:.2f}x (target >= {TARGET_SPEEDUP}x: "
        f"{'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}); peak memory {peak:.2f} GiB (target < "
        f"{TARGET_PEAK_GIB:g} GiB: {'met' if peak < TARGET_PEAK_GIB else 'NOT met'}).",
        f"Search: {record.get('config', '?')}, random strategy, {record.get('evaluations', '?')} evaluations, local "
        "Ray with 2 CPUs; candidates/s from the candidates' own timestamps (driver start-up excluded); memory: the "
        "driver plus every process it started, sampled every 0.2 s.",
        f"Latency: {' and '.join(kinds) or 'not recorded'} (the config's device).",
        machine_note(record.get("machine"), record.get("cpus"), versions.get("platform"), versions),
    ]
    return result_table(
        "Search throughput and memory: 1 vs 2 concurrent trials", COLUMNS, [table_row(r) for r in rows], notes
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("configs/quickstart.yaml"))
    ap.add_argument("--evaluations", type=int, default=24)
    ap.add_argument("--out-dir", type=Path, default=dated_results())
    args = ap.parse_args()
    rows = [run(args.config, c, args.evaluations) for c in (1, 2)]
    record = {
        "benchmark": "search_throughput",
        "config": str(args.config),
        "evaluations": args.evaluations,
        "rows": rows,
        "speedup": rows[1]["rate_per_s"] / rows[0]["rate_per_s"],
        "machine": cpu_name(),
        "cpus": psutil.cpu_count(),
        "versions": runtime_versions("ray"),
    }
    record["table"] = throughput_table(record)
    print(f"\n{record['table']['title']}")
    print(f"{'concurrent':>10} {'candidates':>10} {'cand/s':>8} {'total s':>8} {'peak GiB':>9}  latency")
    for concurrent, candidates, rate, total, peak, kind in record["table"]["rows"]:
        print(f"{concurrent:>10} {candidates:>10} {rate:>8.3f} {total:>8.1f} {peak:>9.2f}  {kind}")
    print_notes(record["table"]["notes"])
    write_json(args.out_dir / "search_throughput.json", record)


if __name__ == "__main__":
    main()
