"""How long the latency knapsack takes to solve (#17: "solving for torchvision resnet50's groups
takes < 1 s").

The knapsack strategy's own pieces, as the strategy builds them: torchvision ResNet-50 at
224x224 (random weights: the solve time does not depend on them), the width grid from
``lower_bound`` 0.1 with ``round_to`` 8 thinned to ``max_choices`` (16) widths per group, l1
channel scores (normalised per group), and a layer-additive latency model
(``roofline`` on the shipped server-CPU profile by default, or ``macs``). For each budget
(a fraction of the base model's predicted latency) it reports the solve time (the Lagrangian
bound, the exact reduction and the MILP on what remains, with the strategy's default MILP time
limit), whether the answer is proven optimal, and the gap to the bound. The one-off costs
(scoring the channels, profiling the latency table) are reported beside it.

    python bench/knapsack_speed.py [--model torchvision:resnet50] [--latency roofline]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import args_record, dated_results, machine, machine_note, print_result_table, result_table, write_json  # noqa: E402,E501
from prunepilot.hw_models.base import runtime_versions  # noqa: E402
from prunepilot.hw_models.registry import get_latency_model  # noqa: E402
from prunepilot.models import build_model  # noqa: E402
from prunepilot.oneshot.widths import WidthGrid  # noqa: E402
from prunepilot.pruning import PruningSpace  # noqa: E402
from prunepilot.pruning.adapter import group_scores  # noqa: E402
from prunepilot.search.knapsack import LatencyKnapsack  # noqa: E402
from prunepilot.search.strategies.knapsack import KnapsackSettings, thin  # noqa: E402

TARGET_S = 1.0


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="torchvision:resnet50")
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--latency", default="roofline", help="a layer-additive latency model: roofline, macs, ...")
    ap.add_argument("--fractions", default="0.9,0.7,0.5,0.3")
    ap.add_argument("--lower-bound", type=float, default=0.1)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/<date>/knapsack_speed.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    settings = KnapsackSettings()
    torch.manual_seed(0)
    model = build_model(args.model, num_classes=1000).eval()
    x = torch.zeros(1, 3, args.image, args.image)
    space = PruningSpace.build(model, x)
    grid = WidthGrid.from_space(space, args.lower_bound, args.round_to)
    choices = {g: thin(c, settings.max_choices) for g, c in grid.choices.items()}
    t = time.perf_counter()
    scores = group_scores(model, x, "l1")
    score_s = time.perf_counter() - t
    latency = get_latency_model(args.latency)
    t = time.perf_counter()
    knapsack = LatencyKnapsack(space, choices, scores, latency, normalize=True)
    build_s = time.perf_counter() - t
    base_ms = knapsack.predict_ms(space.full_widths())
    rows: list[list[Any]] = []
    for fraction in (float(f) for f in args.fractions.split(",")):
        sol = knapsack.solve(fraction * base_ms, time_limit_s=settings.time_limit_s)
        if sol is None:
            rows.append([fraction, None, None, None, None, None])
            continue
        gap = (sol.bound - sol.value) / max(abs(sol.bound), 1e-12)
        rows.append([fraction, sol.seconds, sol.optimal, gap, sol.predicted_ms / base_ms, sol.seconds < TARGET_S])
    slowest = max((r[1] for r in rows if r[1] is not None), default=None)
    verdict = "met" if slowest is not None and slowest < TARGET_S else "NOT met"
    m, versions = machine(), runtime_versions()
    table = result_table(
        f"Latency knapsack: solve time on {args.model} ({len(space.groups)} groups)",
        [
            "budget (of base, predicted)",
            "solve s",
            "proven optimal",
            "gap to bound",
            "latency / base (predicted)",
            f"< {TARGET_S:g} s",
        ],  # fmt: skip
        rows,
        [
            f"{len(space.groups)} groups x up to {settings.max_choices} widths (lower bound {args.lower_bound:g}, "
            f"round_to {args.round_to}), l1 scores normalised per group, latency model {args.latency} (predicted), "
            f"MILP time limit {settings.time_limit_s:g} s (the strategy's default); one-off: channel scores "
            f"{score_s:.2f} s, latency table {build_s:.2f} s (profiled once per search).",
            f"Target (#17): solving takes < {TARGET_S:g} s: {verdict} (slowest {slowest if slowest is None else round(slowest, 3)} s). "  # noqa: E501
            "An answer not proven optimal is the best found within the time limit, at most 'gap to bound' below the optimum.",  # noqa: E501
            machine_note(m["cpu"], m["cores"], m["platform"], versions),
        ],
    )
    out = args.out or dated_results() / "knapsack_speed.json"
    write_json(out, {"benchmark": "knapsack_speed", "args": args_record(args), "machine": m, "versions": versions,
                     "table": table})  # fmt: skip
    print_result_table(table)


if __name__ == "__main__":
    main()
