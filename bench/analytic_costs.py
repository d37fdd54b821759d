"""Analytic MACs/params of a policy vs pruning the model and counting (issue 2's speed target).

For each model, N random policies: time ``space.macs(widths)`` + ``space.params(widths)``
(analytic, no pruning) against ``apply_policy`` + ``count_macs_params`` (prune, then count with
forward hooks), and check the figures agree. Target: analytic >= 100x faster.

    python bench/analytic_costs.py [--policies 10] [--out-dir bench/results]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.common import dated_results, machine, machine_note, result_table, write_json
from prunepilot.hw_models.base import runtime_versions
from prunepilot.models import build_model
from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy, count_macs_params

MODELS = [("resnet56", (1, 3, 32, 32)), ("mobilenetv2", (1, 3, 32, 32)), ("torchvision:resnet50", (1, 3, 224, 224))]


def measure(spec: str, shape: tuple[int, ...], policies: int, seed: int) -> dict[str, Any]:
    model = build_model(spec, num_classes=10, in_channels=shape[1]).eval()
    x = torch.zeros(shape)
    space = PruningSpace.build(model, x)
    rng = random.Random(seed)
    analytic, pruned, max_err = [], [], 0.0
    for _ in range(policies):
        policy = PruningPolicy.from_ratios(space, [rng.uniform(0.2, 1.0) for _ in space.groups])
        t = time.perf_counter()
        macs, params = space.macs(policy.channels), space.params(policy.channels)
        analytic.append(time.perf_counter() - t)
        t = time.perf_counter()
        counted = count_macs_params(apply_policy(model, policy, x, space=space), x)
        pruned.append(time.perf_counter() - t)
        max_err = max(max_err, abs(macs / counted[0] - 1), abs(params / counted[1] - 1))
    a, p = statistics.median(analytic), statistics.median(pruned)
    return {
        "model": spec,
        "input": list(shape),
        "groups": len(space.groups),
        "policies": policies,
        "analytic_ms": a * 1e3,
        "prune_count_ms": p * 1e3,
        "speedup": p / a,
        "max_rel_error": max_err,
    }


def table(record: dict[str, Any]) -> dict[str, Any]:
    """The BENCHMARKS.md table for one ``analytic_costs.json`` record (also what the script prints)."""
    m, versions = record["machine"], record["versions"]
    return result_table(
        "Analytic MACs/params vs prune-and-count (median per policy)",
        ["model", "groups", "analytic ms", "prune+count ms", "speed-up", "max rel. error"],
        [[r["model"], r["groups"], r["analytic_ms"], r["prune_count_ms"], r["speedup"], r["max_rel_error"]]
         for r in record["rows"]],
        ["Target: analytic >= 100x faster; 1 torch thread.",
         machine_note(m.get("cpu"), m.get("cores"), m.get("platform"), versions)],
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="3 policies per model")
    ap.add_argument("--out-dir", type=Path, default=dated_results())
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = 3 if args.quick else args.policies
    rows = [measure(spec, shape, n, args.seed) for spec, shape in MODELS]
    doc: dict[str, Any] = {
        "benchmark": "analytic_costs",
        "quick": args.quick,
        "rows": rows,
        "machine": machine(),
        "versions": runtime_versions(),
    }
    doc["table"] = table(doc)
    write_json(args.out_dir / "analytic_costs.json", doc)
    print(f"{'model':>22} {'groups':>6} {'analytic ms':>12} {'prune+count ms':>15} {'speed-up':>9} {'max err':>9}")
    for r in rows:
        print(
            f"{r['model']:>22} {r['groups']:>6} {r['analytic_ms']:>12.3f} {r['prune_count_ms']:>15.1f} "
            f"{r['speedup']:>8.0f}x {r['max_rel_error']:>9.1e}"
        )


if __name__ == "__main__":
    main()
