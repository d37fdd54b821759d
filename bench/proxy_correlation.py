"""How well does each scoring protocol rank candidates by their accuracy after the fine-tune?

For each committed benchmark base (``bench/bases/``) and each latency budget (fractions of the
base's latency measured on ``--device``), ``--policies`` random policies are drawn around the
budget: per-group keep ratios uniform in ``[lower_bound, 1]``, then scaled together until the
search's own budget-check predictor puts them in ``[0.85, 1] x budget`` (the predictor is the
product's, fitted on measured uniform points; each policy's latency is then *measured*). Every
policy is scored by every protocol (``prunepilot.search.protocols``, on the held-out split of
the training data) and then gets the standard fine-tune: ``prunepilot.training.fit`` with
distillation from the unpruned model, one pass of ``--ft-batches`` training batches, lr 0.01,
cosine; then test accuracy. Kendall tau and Spearman (scipy) of score vs that test accuracy,
per model, budget and protocol, with the seconds each protocol costs per candidate.

    python bench/proxy_correlation.py --quick      # smoke: resnet20, 6 policies at 50%
    python bench/proxy_correlation.py              # both bases, 50% and 30%, 40 policies each

Writes ``bench/results/<date>/proxy_correlation.json`` (``rows`` of ``{model, budget,
protocol, kendall_tau, spearman, seconds_per_candidate, n}``, ``default_protocol`` and the
table) and one scatter plot per model and budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bases.load import BASES, BASES_DIR, DATA, load_base  # noqa: E402
from bench.finetune import BATCHES, finetune_test  # noqa: E402
from prunepilot.pruning import PruningPolicy, apply_policy  # noqa: E402
from prunepilot.search.config import validate_config  # noqa: E402
from prunepilot.search.evaluator import Evaluator  # noqa: E402
from prunepilot.search.protocols import get_protocol  # noqa: E402

#: protocol label -> (name, settings)
PROTOCOLS: dict[str, tuple[str, dict[str, Any]]] = {
    "bn-recal": ("bn-recal", {}),
    "short-finetune-20": ("short-finetune", {"steps": 20}),
    "short-finetune-60": ("short-finetune", {"steps": 60}),
    "short-finetune-20x32": ("short-finetune", {"steps": 20, "batch_size": 32}),
    "short-finetune-10x64": ("short-finetune", {"steps": 10, "batch_size": 64}),
    "reconstruct": ("reconstruct", {}),
    "supernet": ("supernet", {"steps": 300, "lr": 0.01}),
}
#: the cost a search can pay per candidate on this machine (the issue's target)
MAX_SECONDS = 2.0
#: fewer policies than this at a budget give no correlation row
MIN_POINTS = 3
#: notes on budgets no policy reached (filled by :func:`study`)
UNREACHABLE: list[str] = []
TARGETS = {0.5: 0.7, 0.3: 0.6}


def search_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The search config whose evaluator the study uses (the committed base as checkpoint)."""
    info = json.loads((BASES_DIR / f"{name}.json").read_text())
    return {
        "name": f"proxy-{name}",
        "seed": 0,
        "model": {"spec": info["spec"], "checkpoint": str(BASES_DIR / info["checkpoint"])},
        "data": {**DATA.model_dump(mode="json", exclude={"root"}), "root": os.environ.get("PRUNEPILOT_DATA")},
        "device": {"name": args.device, "batch_size": args.latency_batch},
        "budget": {"fraction": 0.5},
        "evaluation": {"lower_bound": args.lower_bound, "bn_batches": args.bn_batches, "val_batches": args.val_batches},
        "strategy": {"name": "random", "evaluations": 1},
    }


def draw_policies(ev: Evaluator, target_ms: float, n: int, gen: torch.Generator) -> list[PruningPolicy]:
    """``n`` random policies whose predicted latency is in ``[0.85, 1] x target_ms``."""
    lower = ev.cfg.evaluation.lower_bound
    names = ev.space.names
    out: list[PruningPolicy] = []
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        raw = lower + (1 - lower) * torch.rand(len(names), generator=gen)
        aim = target_ms * float(0.85 + 0.15 * torch.rand(1, generator=gen))
        lo, hi = 0.0, 1.0  # scale the ratios' excess over the lower bound by s in [0, 1]
        for _ in range(30):
            mid = (lo + hi) / 2
            pol = ev.make_policy(dict(zip(names, (lower + mid * (raw - lower)).tolist(), strict=True)))
            lo, hi = (mid, hi) if ev.predict_latency_ms(pol.channels) <= aim else (lo, mid)
        pol = ev.make_policy(dict(zip(names, (lower + lo * (raw - lower)).tolist(), strict=True)))
        if 0.85 * target_ms <= ev.predict_latency_ms(pol.channels) <= target_ms and pol.key() not in {
            p.key() for p in out
        }:
            out.append(pol)
    return out


def pruner(ev: Evaluator, policy: PruningPolicy) -> Callable[[], nn.Module]:
    """A fresh pruned copy of the base at ``policy`` per call (what protocols score)."""
    return lambda: apply_policy(ev.model, policy, ev.example, space=ev.space, calib_batches=ev.calib)


def correlations(scores: list[float], truth: list[float]) -> tuple[float, float]:
    from scipy.stats import kendalltau, spearmanr

    if len(set(scores)) < 2 or len(set(truth)) < 2:
        return 0.0, 0.0
    return float(kendalltau(scores, truth).statistic), float(spearmanr(scores, truth).statistic)


def study(name: str, args: argparse.Namespace, out_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows (per budget and protocol) and per-policy points for one base."""
    model, info = load_base(name)
    ev = Evaluator(validate_config(search_config(name, args)), base_state=model.state_dict())
    base_res, low_res = ev.calibrate_fit()
    base_ms = float(base_res.ms)
    data = ev.scoring_data(work_dir=args.cache_dir / f"supernet-{name}")  # a resumable cache, not a result
    protocols = {label: get_protocol(p, s) for label, (p, s) in PROTOCOLS.items() if label in args.protocols}
    prepare = {label: proto.prepare(data) for label, proto in protocols.items()}
    rows, points = [], []
    for budget in args.budgets:
        gen = torch.Generator().manual_seed(int(budget * 1000))
        policies = draw_policies(ev, budget * base_ms, args.policies, gen)
        for i, pol in enumerate(policies):
            pruned = apply_policy(ev.model, pol, ev.example, space=ev.space, calib_batches=ev.calib)
            point: dict[str, Any] = {
                "model": name,
                "budget": budget,
                "policy": i,
                "mean_keep": pol.mean_keep(),
                "predicted_ms": ev.predict_latency_ms(pol.channels),
                "measured_ms": float(ev.latency_of(pruned, pol.channels).ms),
                "scores": {},
                "seconds": {},
            }
            for label, proto in protocols.items():
                start = time.perf_counter()
                point["scores"][label] = proto.score(pol, pruner(ev, pol), data)
                point["seconds"][label] = time.perf_counter() - start
            point["finetuned_test_acc"] = finetune_test(ev, pol, args.ft_batches)
            points.append(point)
            print(
                f"{name} {budget:.0%} #{i}: {point['scores']} -> ft test {point['finetuned_test_acc']:.4f}", flush=True
            )
        mine = [p for p in points if p["budget"] == budget and p["model"] == name]
        truth = [p["finetuned_test_acc"] for p in mine]
        if len(mine) < MIN_POINTS:
            floor = ev.predict_latency_ms(
                ev.make_policy(dict.fromkeys(ev.space.names, ev.cfg.evaluation.lower_bound)).channels
            )
            UNREACHABLE.append(
                f"{name} at {budget:.0%}: only {len(mine)} random policies reached [0.85, 1] x the budget; the "
                f"all-lower-bound model ({ev.cfg.evaluation.lower_bound}) is predicted at {floor / base_ms:.0%} of the "
                f"base's {base_ms:.3f} ms: width pruning cannot reach this budget here"
            )
            continue
        for label in protocols:
            tau, rho = correlations([p["scores"][label] for p in mine], truth)
            secs = sum(p["seconds"][label] for p in mine) / max(1, len(mine))
            rows.append(
                {
                    "model": name,
                    "budget": budget,
                    "protocol": label,
                    "kendall_tau": tau,
                    "spearman": rho,
                    "seconds_per_candidate": secs,
                    "prepare_seconds": prepare[label].get("prepare_seconds", 0.0),
                    "n": len(mine),
                    "measured_share": sum(p["measured_ms"] for p in mine) / max(1, len(mine)) / base_ms,
                }
            )
    return rows, points


def is_reduced(args: argparse.Namespace) -> bool:
    """Fewer policies or bases than the study asks for."""
    return bool(args.policies < 40 or sorted(args.bases) != sorted(BASES))


def default_protocol(rows: list[dict[str, Any]]) -> str:
    """The protocol with the best worst-case tau among those affordable (<= MAX_SECONDS)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["protocol"], []).append(r)
    affordable = {k: v for k, v in by.items() if max(r["seconds_per_candidate"] for r in v) <= MAX_SECONDS} or by
    return max(affordable, key=lambda k: min(r["kendall_tau"] for r in affordable[k]))


def table(rows: list[dict[str, Any]], chosen: str, args: argparse.Namespace) -> dict[str, Any]:
    notes = [
        f"Score vs test accuracy after the standard fine-tune (distillation, {args.ft_batches} training "
        f"batches, lr 0.01 cosine); {args.policies} random policies per model and budget at [0.85, 1] x the "
        f"budget on the search's predictor, latency measured on {args.device} at batch {args.latency_batch}.",
        f"Default protocol chosen: {chosen} (best worst-case Kendall tau at <= {MAX_SECONDS:g} s per candidate)."
        if not is_reduced(args)
        else f"No default protocol is chosen from a reduced study; the rule (best worst-case tau at <= "
        f"{MAX_SECONDS:g} s per candidate) would pick {chosen}.",
        *UNREACHABLE,
    ]
    if is_reduced(args):
        notes.append(
            f"REDUCED study: bases {', '.join(args.bases)}, {args.policies} policies per budget (the full study: "
            f">= 40 on every base in {', '.join(sorted(BASES))}); the figures are indicative, not the verdict."
        )
    for r in rows:
        if r["protocol"] == chosen or is_reduced(args):
            target = TARGETS.get(r["budget"])
            if target is not None:
                verdict = "MET" if r["kendall_tau"] >= target else "NOT MET"
                tau = r["kendall_tau"]
                notes.append(
                    f"{r['model']} at {r['budget']:.0%}, {r['protocol']}: tau {tau:.3f} against the target "
                    f"{target}: {verdict}"
                )
    return {
        "title": "Scoring protocols: rank correlation with the fine-tuned test accuracy"
        + (" (quick)" if args.quick else ""),
        "columns": ["model", "budget", "protocol", "n", "Kendall tau", "Spearman", "s / candidate", "prepare s"],
        "rows": [
            [
                r["model"],
                f"{r['budget']:.0%}",
                r["protocol"],
                r["n"],
                r["kendall_tau"],
                r["spearman"],
                r["seconds_per_candidate"],
                r["prepare_seconds"],
            ]
            for r in rows
        ],
        "notes": notes,
    }


def scatter(points: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(p["model"], p["budget"]) for p in points})
    labels = sorted({k for p in points for k in p["scores"]})
    fig, axes = plt.subplots(len(keys), len(labels), figsize=(3.2 * len(labels), 3 * len(keys)), squeeze=False)
    for i, (model, budget) in enumerate(keys):
        mine = [p for p in points if p["model"] == model and p["budget"] == budget]
        for j, label in enumerate(labels):
            ax = axes[i][j]
            ax.scatter([p["scores"][label] for p in mine], [p["finetuned_test_acc"] for p in mine], s=10)
            ax.set_title(f"{model} {budget:.0%}: {label}", fontsize=8)
            ax.set_xlabel("score (held-out train split)", fontsize=7)
            ax.set_ylabel("test acc after fine-tune", fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="resnet20, 6 policies at 50%%, short fine-tune")
    ap.add_argument("--bases", nargs="+", choices=sorted(BASES), default=sorted(BASES))
    ap.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.3])
    ap.add_argument("--policies", type=int, default=40)
    ap.add_argument("--ft-batches", type=int, default=BATCHES, help="the standard fine-tune's batches")
    ap.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), default=list(PROTOCOLS))
    ap.add_argument("--device", default="local-cpu-cputime")
    ap.add_argument("--latency-batch", type=int, default=1)
    ap.add_argument("--lower-bound", type=float, default=0.2)
    ap.add_argument("--bn-batches", type=int, default=4)
    ap.add_argument("--val-batches", type=int, default=4, help="held-out batches (of 512) scored per candidate")
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/proxy_correlation"), help="supernet checkpoints")
    args = ap.parse_args()
    if args.quick:
        args.bases, args.budgets, args.policies, args.ft_batches = ["resnet20"], [0.5], 6, 30
    out_dir = args.out_dir or Path("bench/results") / (
        datetime.now().strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    start = time.time()
    rows: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    for name in args.bases:
        r, p = study(name, args, out_dir)
        rows += r
        points += p
    chosen = default_protocol(rows) if rows else "bn-recal"
    doc = {
        "benchmark": "proxy_correlation",
        "quick": args.quick,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows,
        "points": points,
        "default_protocol": None if is_reduced(args) else chosen,
        "seconds": time.time() - start,
        "table": table(rows, chosen, args),
    }
    path = out_dir / "proxy_correlation.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    scatter(points, out_dir / "proxy_correlation.png")
    print(json.dumps(doc["table"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
