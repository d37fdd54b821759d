"""How much of a proxy study's ranking can any score reach? The standard fine-tune's seed noise.

``bench/proxy_correlation.py`` ranks scoring protocols by Kendall tau against each policy's test
accuracy after the standard fine-tune (seed 0). That figure is itself noisy: the same policy
fine-tuned with another seed (another batch order) lands elsewhere, and no score can predict
that. This script takes a finished study, picks ``--policies`` of its policies per model and
budget spread over its range of fine-tuned accuracy, fine-tunes each again with ``--seeds`` more
seeds (the standard recipe otherwise unchanged), and reports:

* the pooled within-policy standard deviation (the seed noise) against the study's spread across
  policies, and the reliability ``1 - noise^2 / spread^2``;
* the **tau ceiling**: the Kendall tau a perfect score would reach against one noisy fine-tune,
  simulated (``--draws``) by adding that noise to the study's accuracies (median, 5-95%);
* the study's best tau per model and budget beside it, and the issue's target.

    python bench/finetune_noise.py --study bench/results/<date>/proxy_correlation.json

Writes ``bench/results/<date>/finetune_noise.json`` (``rows`` of ``{model, budget, policies,
seeds, seed_sd, spread_sd, reliability, tau_ceiling, tau_ceiling_p05, tau_ceiling_p95,
best_protocol, best_tau, target}`` and the fine-tuned accuracies per policy and seed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bases.load import load_base  # noqa: E402
from bench.common import args_record, dated_results, machine, machine_note, result_table, write_json  # noqa: E402
from bench.finetune import finetune_test  # noqa: E402
from bench.proxy_correlation import TARGETS, draw_key, search_config  # noqa: E402
from prunepilot.pruning import PruningPolicy  # noqa: E402
from prunepilot.search.config import validate_config  # noqa: E402
from prunepilot.search.evaluator import Evaluator  # noqa: E402

COLUMNS = [
    "model", "budget", "policies", "seeds", "seed sd (points)", "spread sd (points)", "reliability",
    "tau ceiling (median)", "tau ceiling 5%", "tau ceiling 95%", "best protocol", "its tau", "target tau",
]  # fmt: skip


def spread_pick(points: Sequence[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` points evenly spaced over the ranking by fine-tuned accuracy (lowest and highest included)."""
    ranked = sorted(points, key=lambda p: p["finetuned_test_acc"])
    if n >= len(ranked):
        return ranked
    if n == 1:
        return [ranked[len(ranked) // 2]]
    return [ranked[round(i * (len(ranked) - 1) / (n - 1))] for i in range(n)]


def pooled_sd(accs: Sequence[Sequence[float]]) -> float:
    """The within-policy standard deviation pooled over policies (each with >= 2 seeds)."""
    return float(np.sqrt(statistics.fmean(statistics.variance(a) for a in accs)))


def tau_ceiling(truth: Sequence[float], noise_sd: float, draws: int, seed: int) -> tuple[float, float, float]:
    """Kendall tau of ``truth`` against ``truth`` plus Gaussian noise of ``noise_sd``, over
    ``draws`` draws: (median, 5th, 95th percentile). A perfect score's tau against one noisy run."""
    rng = np.random.default_rng(seed)
    y = np.asarray(truth, dtype=float)
    taus = [float(kendalltau(y, y + rng.normal(0.0, noise_sd, len(y)))[0]) for _ in range(draws)]
    return float(np.median(taus)), float(np.percentile(taus, 5)), float(np.percentile(taus, 95))


def summarise(study: dict[str, Any], runs: list[dict[str, Any]], draws: int) -> list[dict[str, Any]]:
    """One row per model and budget of ``runs`` (``{model, budget, policy, accs}``)."""
    rows = []
    for model, budget in sorted({(r["model"], r["budget"]) for r in runs}, key=lambda k: (k[0], -k[1])):
        mine = [r for r in runs if r["model"] == model and r["budget"] == budget]
        truth = [p["finetuned_test_acc"] for p in study["points"] if p["model"] == model and p["budget"] == budget]
        noise = pooled_sd([r["accs"] for r in mine])
        spread = statistics.stdev(truth)
        med, lo, hi = tau_ceiling(truth, noise, draws, seed=0)
        theirs = [r for r in study["rows"] if r["model"] == model and r["budget"] == budget]
        best = max(theirs, key=lambda r: r["kendall_tau"]) if theirs else None
        rows.append({"model": model, "budget": budget, "policies": len(mine), "seeds": len(mine[0]["accs"]),
                     "seed_sd": noise, "spread_sd": spread, "reliability": max(0.0, 1 - noise**2 / spread**2),
                     "tau_ceiling": med, "tau_ceiling_p05": lo, "tau_ceiling_p95": hi,
                     "best_protocol": best["protocol"] if best else None,
                     "best_tau": best["kendall_tau"] if best else None, "target": TARGETS.get(budget)})  # fmt: skip
    return rows


def table(doc: dict[str, Any]) -> dict[str, Any]:
    a = doc["args"]
    cells = [[r["model"], r["budget"], r["policies"], r["seeds"], 100 * r["seed_sd"], 100 * r["spread_sd"],
              r["reliability"], r["tau_ceiling"], r["tau_ceiling_p05"], r["tau_ceiling_p95"], r["best_protocol"],
              r["best_tau"], r["target"]] for r in doc["rows"]]  # fmt: skip
    notes = [
        f"Study: {a['study']}. Per model and budget, {a['policies']} of its policies spread over its range of "
        f"fine-tuned test accuracy were fine-tuned again with seeds {list(range(1, a['seeds'] + 1))} (the standard "
        "fine-tune otherwise unchanged: bench/finetune.py, distillation, lr 0.01 cosine); seed 0 is the study's.",
        "seed sd: within-policy standard deviation of the test accuracy, pooled; spread sd: the standard deviation "
        "across all of the study's policies at that budget (seed 0); reliability = 1 - seed^2 / spread^2.",
        f"tau ceiling: Kendall tau of the study's accuracies against themselves plus Gaussian noise of the seed sd, "
        f"{a['draws']} draws (median, 5-95%): what a score that knew each policy's expected fine-tuned accuracy "
        "would reach against one fine-tune. A target under the ceiling is reachable by a better score; the gap "
        "between the ceiling and the best protocol is the score's, not the measurement's.",
    ]
    for r in doc["rows"]:
        if r["target"] is not None and r["best_tau"] is not None:
            reach = "under" if r["target"] < r["tau_ceiling_p05"] else "NOT clearly under"
            notes.append(
                f"{r['model']} at {r['budget']:.0%}: target tau {r['target']} is {reach} the ceiling "
                f"({r['tau_ceiling']:.3f}); the best protocol ({r['best_protocol']}) reaches {r['best_tau']:.3f}."
            )
    m = doc["machine"]
    notes.append(machine_note(m["cpu"], m["cores"], m["platform"], {}, f"; {doc['seconds']:.0f} s"))
    return result_table("The standard fine-tune's seed noise and the tau a perfect score could reach", COLUMNS,
                        cells, notes)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", type=Path, required=True, help="a finished proxy_correlation.json")
    ap.add_argument("--policies", type=int, default=6, help="policies re-fine-tuned per model and budget")
    ap.add_argument("--seeds", type=int, default=2, help="extra seeds per policy (seed 0 is the study's)")
    ap.add_argument("--draws", type=int, default=2000, help="simulated noisy rankings for the ceiling")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 beside another job on 2 cores)")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.policies < 2 or args.seeds < 1:
        raise SystemExit(f"--policies must be >= 2 and --seeds >= 1 (got {args.policies}, {args.seeds})")
    study = json.loads(args.study.read_text())
    torch.set_num_threads(args.threads)
    started = time.time()
    evs: dict[tuple[str, float], Evaluator] = {}
    runs = []
    for model, budget in sorted({(p["model"], p["budget"]) for p in study["points"]}, key=lambda k: (k[0], -k[1])):
        points = [p for p in study["points"] if p["model"] == model and p["budget"] == budget]
        bound = float(study["draws"][draw_key(model, budget)].get("lower_bound", 0.2))
        if (model, bound) not in evs:
            ns = argparse.Namespace(**{**study["args"], "lower_bound": bound})
            base, _ = load_base(model)
            evs[(model, bound)] = Evaluator(validate_config(search_config(model, ns)), base_state=base.state_dict())
        ev = evs[(model, bound)]
        for p in spread_pick(points, args.policies):
            policy = PruningPolicy.from_widths(ev.space, p["channels"])
            accs = [p["finetuned_test_acc"]]
            accs += [finetune_test(ev, policy, seed=seed) for seed in range(1, args.seeds + 1)]
            runs.append({"model": model, "budget": budget, "policy": p["policy"], "accs": accs})
            print(f"{model} {budget:.0%} #{p['policy']}: {accs}", flush=True)
    doc: dict[str, Any] = {"benchmark": "finetune_noise", "args": args_record(args), "runs": runs,
                           "machine": machine(), "seconds": time.time() - started}  # fmt: skip
    doc["rows"] = summarise(study, runs, args.draws)
    doc["table"] = table(doc)
    write_json((args.out_dir or dated_results()) / "finetune_noise.json", doc)


if __name__ == "__main__":
    main()
