"""Search throughput and memory: 1 vs 2 concurrent trials on a local Ray with 2 CPUs.

Runs the quickstart search (random strategy) twice, with ``ray.max_concurrent`` 1 and 2, and
prints candidates evaluated per second (from the candidates' own timestamps, so driver
start-up and base-model preparation are excluded) and the peak resident memory of the
driver plus every process it started (Ray's GCS, raylet and workers), sampled every 0.2 s.

    python bench/search_throughput.py [--evaluations 24] [--config configs/quickstart.yaml]

Targets (issue 6): 2 trials >= 1.6x the rate of 1; peak memory < 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil

from prunepilot.search.config import load_config
from prunepilot.search.runner import run_search


def tree_rss() -> int:
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


def run(config: Path, concurrent: int, evaluations: int) -> dict[str, float]:
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
    times = sorted(c["wall_time"] for c in result.candidates)
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")
    return {
        "concurrent": concurrent,
        "candidates": len(times),
        "rate_per_s": rate,
        "total_s": total,
        "peak_rss_gib": peak[0] / 2**30,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("configs/quickstart.yaml"))
    ap.add_argument("--evaluations", type=int, default=24)
    args = ap.parse_args()
    rows = [run(args.config, c, args.evaluations) for c in (1, 2)]
    speedup = rows[1]["rate_per_s"] / rows[0]["rate_per_s"]
    print(f"\nsearch throughput ({args.config}, random, {args.evaluations} evaluations, measured latency)")
    print(f"{'concurrent':>10} {'candidates':>10} {'cand/s':>8} {'total s':>8} {'peak GiB':>9}")
    for r in rows:
        print(
            f"{r['concurrent']:>10} {r['candidates']:>10} {r['rate_per_s']:>8.3f} {r['total_s']:>8.1f} "
            f"{r['peak_rss_gib']:>9.2f}"
        )
    print(
        f"speed-up 2 vs 1 trials: {speedup:.2f}x (target >= 1.6x); "
        f"peak memory {max(r['peak_rss_gib'] for r in rows):.2f} GiB (target < 4 GiB)"
    )
    out = Path("bench/results") / datetime.now().strftime("%Y-%m-%d")
    out.mkdir(parents=True, exist_ok=True)
    (out / "search_throughput.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "speedup": speedup,
                "machine": platform.processor() or platform.machine(),
                "cpus": psutil.cpu_count(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
