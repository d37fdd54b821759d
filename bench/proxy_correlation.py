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

**In pieces.** The full study is hours on 2 cores (every policy gets the standard fine-tune), so
it runs as pieces: ``--bases`` and ``--budgets`` limit a run; every policy's point is saved as it
is made (``proxy_correlation.partial.json``), with the run's draws (the policies drawn per base and
budget, and the base latency they were drawn at); ``--resume PARTIAL`` continues an interrupted
piece on the same policies; ``--merge`` joins pieces (same settings, each base and budget drawn
in one piece) and recomputes the rows from the points:

    python bench/proxy_correlation.py --bases resnet20 --budgets 0.5 --out-dir /tmp/pc-r50
    python bench/proxy_correlation.py --bases resnet20 --budgets 0.5 --out-dir /tmp/pc-r50 \
        --resume /tmp/pc-r50/proxy_correlation.partial.json
    python bench/proxy_correlation.py --merge /tmp/pc-r50/proxy_correlation.json /tmp/pc-r30/... \
        --out-dir bench/results/<date>

**Rescoring.** A policy's fine-tuned test accuracy does not depend on how it is scored, so a new
protocol joins a finished study without new fine-tunes: ``--rescore STUDY --protocols LABEL ...``
scores the study's stored policies (same bases, same evaluator settings, same held-out batches)
with the protocols it lacks and writes the study again with their rows; their seconds per
candidate are the rescoring run's:

    python bench/proxy_correlation.py --rescore bench/results/<date>/proxy_correlation.json \
        --protocols head-refit --out-dir bench/results/<today>

Budgets are fractions of the base measured at ``--latency-batch`` (default 32, the batch of the
search-quality and criteria benchmarks). The default protocol is chosen only from the full study.

Writes ``bench/results/<date>/proxy_correlation.json`` (``rows`` of ``{model, budget,
protocol, kendall_tau, spearman, seconds_per_candidate, n}``, ``default_protocol`` and the
table) and one scatter plot per model and budget.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bases.load import BASES, BASES_DIR, DATA, load_base  # noqa: E402
from bench.common import args_record, machine, write_json  # noqa: E402
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
    "head-refit": ("head-refit", {}),
    "head-refit-calib": ("head-refit", {"extra_batches": 0}),
}
#: the cost a search can pay per candidate on this machine (the issue's target)
MAX_SECONDS = 2.0
#: fewer policies than this at a budget give no correlation row
MIN_POINTS = 3
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


#: settings every piece of one study must share (``--resume``, ``--merge``)
SAME_SETTINGS = ("ft_batches", "device", "latency_batch", "bn_batches", "val_batches", "quick")
# ``lower_bound`` may differ between pieces: it bounds the keep ratios a base and budget's policies
# are drawn from, and ResNet-20 at 30% needs one under 0.2 (its all-0.2 model is predicted at 30%
# of the base). Each draw records its own, and the merged notes name each where they differ.
#: the full study: this many policies at each of these budgets on every base
FULL_POLICIES, FULL_BUDGETS = 40, (0.5, 0.3)


def draw_key(name: str, budget: float) -> str:
    """The key of one base and budget's draw in a result (``"resnet20@0.5"``)."""
    return f"{name}@{budget:g}"


def check_settings(docs: list[dict[str, Any]], sources: list[str], args: dict[str, Any] | None = None) -> None:
    """Refuse pieces (or a resumed run, ``args``) whose settings in :data:`SAME_SETTINGS` differ."""
    first = args if args is not None else docs[0]["args"]
    origin = "this run" if args is not None else sources[0]
    for d, src in zip(docs, sources, strict=True):
        if d.get("benchmark") != "proxy_correlation":
            raise SystemExit(f"{src}: not a proxy_correlation result (benchmark {d.get('benchmark')!r})")
        differ = {k: d["args"].get(k) for k in SAME_SETTINGS if d["args"].get(k) != first.get(k)}
        if differ:
            want = {k: first.get(k) for k in differ}
            raise SystemExit(f"{src}: settings {differ} differ from {origin}'s {want}; pieces of one study share them")


def study(name: str, args: argparse.Namespace, doc: dict[str, Any], save: Callable[[], None]) -> None:
    """Score and fine-tune ``args.policies`` policies of base ``name`` per budget into ``doc``
    (``draws``, ``points``, ``prepare_seconds``, ``unreachable``), saving after every policy.

    A budget already drawn in ``doc`` (a resumed run) keeps its policies and its base latency, and
    its policies that already have a point are not run again.
    """
    model, _ = load_base(name)
    ev = Evaluator(validate_config(search_config(name, args)), base_state=model.state_dict())
    base_res, _ = ev.calibrate_fit()
    base_ms = float(base_res.ms)
    # A resumable cache, not a result; keyed by the lower bound, which the supernet is trained under.
    data = ev.scoring_data(work_dir=args.cache_dir / f"supernet-{name}-lb{args.lower_bound:g}")
    protocols = {label: get_protocol(p, s) for label, (p, s) in PROTOCOLS.items() if label in args.protocols}
    prepare = {label: proto.prepare(data) for label, proto in protocols.items()}
    doc["prepare_seconds"][name] = {label: float(prep.get("prepare_seconds", 0.0)) for label, prep in prepare.items()}
    for budget in args.budgets:
        key = draw_key(name, budget)
        if key not in doc["draws"]:
            gen = torch.Generator().manual_seed(int(budget * 1000))
            drawn = draw_policies(ev, budget * base_ms, args.policies, gen)
            doc["draws"][key] = {"base_ms": base_ms, "lower_bound": args.lower_bound,
                                 "policies": [dict(p.channels) for p in drawn]}  # fmt: skip
            save()
        draw = doc["draws"][key]
        drawn_at = draw.get("lower_bound", doc["args"].get("lower_bound"))
        if drawn_at is not None and drawn_at != args.lower_bound:
            raise SystemExit(
                f"{key} was drawn with --lower-bound {drawn_at}; resume it with that bound, not {args.lower_bound}"
            )
        done = {p["policy"] for p in doc["points"] if p["model"] == name and p["budget"] == budget}
        for i, widths in enumerate(draw["policies"]):
            if i in done:
                continue
            pol = PruningPolicy.from_widths(ev.space, widths)
            pruned = apply_policy(ev.model, pol, ev.example, space=ev.space, calib_batches=ev.calib)
            point: dict[str, Any] = {
                "model": name,
                "budget": budget,
                "policy": i,
                "channels": dict(pol.channels),
                "mean_keep": pol.mean_keep(),
                "predicted_ms": ev.predict_latency_ms(pol.channels),
                "measured_ms": float(ev.latency_of(pruned, pol.channels).ms),
                "base_ms": draw["base_ms"],
                "scores": {},
                "seconds": {},
            }
            for label, proto in protocols.items():
                start = time.perf_counter()
                point["scores"][label] = proto.score(pol, pruner(ev, pol), data)
                point["seconds"][label] = time.perf_counter() - start
            point["finetuned_test_acc"] = finetune_test(ev, pol, args.ft_batches)
            doc["points"].append(point)
            save()
            print(
                f"{name} {budget:.0%} #{i}: {point['scores']} -> ft test {point['finetuned_test_acc']:.4f}", flush=True
            )
        if len(draw["policies"]) < MIN_POINTS:
            floor = ev.predict_latency_ms(
                ev.make_policy(dict.fromkeys(ev.space.names, ev.cfg.evaluation.lower_bound)).channels
            )
            doc["unreachable"][key] = (
                f"{name} at {budget:.0%}: only {len(draw['policies'])} random policies reached [0.85, 1] x the "
                f"budget; the all-lower-bound model ({ev.cfg.evaluation.lower_bound}) is predicted at "
                f"{floor / base_ms:.0%} of the base's {base_ms:.3f} ms: width pruning cannot reach this budget here"
            )


Scorer = Callable[[str, dict[str, Any], str], float]


def add_scores(doc: dict[str, Any], labels: Sequence[str], score: Scorer, source: str) -> dict[str, Any]:
    """``doc``'s points scored by protocols ``labels`` too (``score(model, point, label)``), with
    rows, default protocol and table recomputed; the fine-tuned test accuracy of every point is kept.

    Raises:
        SystemExit: a label is unknown, or already scored on some point of ``doc``.
    """
    unknown = [label for label in labels if label not in PROTOCOLS]
    if unknown:
        raise SystemExit(f"--rescore: unknown protocols {unknown}; choose from {sorted(PROTOCOLS)}")
    have = sorted({label for p in doc["points"] for label in p["scores"] if label in labels})
    if have:
        raise SystemExit(f"--rescore: {source} already has scores of {have}; rescore only protocols it lacks")
    start = time.time()
    points = []
    for p in doc["points"]:
        p = {**p, "scores": dict(p["scores"]), "seconds": dict(p["seconds"])}
        for label in labels:
            t = time.perf_counter()
            p["scores"][label] = score(p["model"], p, label)
            p["seconds"][label] = time.perf_counter() - t
        points.append(p)
        print(f"{p['model']} {p['budget']:.0%} #{p['policy']}: {[p['scores'][k] for k in labels]}", flush=True)
    run = {"source": source, "protocols": list(labels), "seconds": time.time() - start, "machine": machine()}
    rescored = [*doc.get("rescored", []), run]
    out = finished({**doc, "points": points, "rescored": rescored}, sources=len(doc.get("sources") or [source]))
    out["table"]["notes"].append(
        f"{', '.join(labels)} scored afterwards on the same policies and fine-tuned accuracies (--rescore "
        f"{source}); their seconds per candidate are from that run."
    )
    return out


def rescore(path: Path, labels: Sequence[str], cache_dir: Path) -> dict[str, Any]:
    """:func:`add_scores` with the study's own evaluators: each base's committed weights, the
    study's device, batch and held-out settings, each draw's lower bound."""
    doc = json.loads(path.read_text())
    check_settings([doc], [str(path)])
    labels = [label for label in labels if not all(label in p["scores"] for p in doc["points"])]
    torch.set_num_threads(2)
    evaluators: dict[tuple[str, float], tuple[Evaluator, Any, dict[str, Any]]] = {}
    bounds = doc["args"]["lower_bound"]

    def score(model: str, point: dict[str, Any], label: str) -> float:
        key = draw_key(model, point["budget"])
        bound = float(doc["draws"][key].get("lower_bound", bounds[key] if isinstance(bounds, dict) else bounds))
        if (model, bound) not in evaluators:
            ns = argparse.Namespace(**{**doc["args"], "lower_bound": bound})
            base, _ = load_base(model)
            ev = Evaluator(validate_config(search_config(model, ns)), base_state=base.state_dict())
            data = ev.scoring_data(work_dir=cache_dir / f"supernet-{model}-lb{bound:g}")
            protocols = {label: get_protocol(*PROTOCOLS[label]) for label in labels}  # one set per evaluator
            for proto in protocols.values():
                proto.prepare(data)
            evaluators[(model, bound)] = (ev, data, protocols)
        ev, data, protocols = evaluators[(model, bound)]
        pol = PruningPolicy.from_widths(ev.space, point["channels"])
        return float(protocols[label].score(pol, pruner(ev, pol), data))

    return add_scores(doc, labels, score, str(path))


def rows_from_points(points: list[dict[str, Any]], prepare: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Per model, budget and protocol: Kendall tau and Spearman of score vs fine-tuned test
    accuracy over the points, cost per candidate, ``n``; a model and budget with fewer than
    :data:`MIN_POINTS` points gives no rows."""
    rows = []
    for model, budget in sorted({(p["model"], p["budget"]) for p in points}, key=lambda k: (k[0], -k[1])):
        mine = [p for p in points if p["model"] == model and p["budget"] == budget]
        if len(mine) < MIN_POINTS:
            continue
        truth = [p["finetuned_test_acc"] for p in mine]
        labels = [label for label in PROTOCOLS if all(label in p["scores"] for p in mine)]
        for label in labels:
            tau, rho = correlations([p["scores"][label] for p in mine], truth)
            rows.append(
                {
                    "model": model,
                    "budget": budget,
                    "protocol": label,
                    "kendall_tau": tau,
                    "spearman": rho,
                    "seconds_per_candidate": sum(p["seconds"][label] for p in mine) / len(mine),
                    "prepare_seconds": prepare.get(model, {}).get(label, 0.0),
                    "n": len(mine),
                    "measured_share": statistics.median(p["measured_ms"] / p["base_ms"] for p in mine),
                }
            )
    return rows


def is_reduced(rows: list[dict[str, Any]]) -> bool:
    """Fewer than :data:`FULL_POLICIES` policies at some budget of :data:`FULL_BUDGETS` on some base."""
    counts = {(r["model"], r["budget"]): r["n"] for r in rows}
    return any(counts.get((b, f), 0) < FULL_POLICIES for b in BASES for f in FULL_BUDGETS)


def default_protocol(rows: list[dict[str, Any]]) -> str:
    """The protocol with the best worst-case tau among those affordable (<= MAX_SECONDS)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["protocol"], []).append(r)
    affordable = {k: v for k, v in by.items() if max(r["seconds_per_candidate"] for r in v) <= MAX_SECONDS} or by
    return max(affordable, key=lambda k: min(r["kendall_tau"] for r in affordable[k]))


def table(
    rows: list[dict[str, Any]], chosen: str, args: dict[str, Any], unreachable: Sequence[str] = (), sources: int = 1
) -> dict[str, Any]:
    """The result table: one row per model, budget and protocol, with the study's verdicts in its notes."""
    reduced = is_reduced(rows)
    counts = sorted({(r["model"], r["budget"], r["n"]) for r in rows}, key=lambda k: (k[0], -k[1]))
    drawn = "; ".join(f"{m} at {b:.0%}: {n}" for m, b, n in counts) or "none"
    notes = [
        f"Score vs test accuracy after the standard fine-tune (distillation, {args['ft_batches']} training "
        f"batches, lr 0.01 cosine); random policies per model and budget at [0.85, 1] x the budget on the "
        f"search's predictor ({drawn}), latency measured on {args['device']} at batch {args['latency_batch']}.",
        f"Default protocol chosen: {chosen} (best worst-case Kendall tau at <= {MAX_SECONDS:g} s per candidate)."
        if not reduced
        else f"No default protocol is chosen from a reduced study; the rule (best worst-case tau at <= "
        f"{MAX_SECONDS:g} s per candidate) would pick {chosen}.",
        *unreachable,
    ]
    if sources > 1:
        notes.append(f"Merged from {sources} pieces of one study (same settings; each base and budget from one piece).")
    bounds = args.get("lower_bound")
    if isinstance(bounds, dict):
        named = "; ".join(f"{k.replace('@', ' at ')}: {v}" for k, v in sorted(bounds.items()))
        notes.append(f"Keep ratios drawn from [lower bound, 1], the lower bound per base and budget: {named}.")
    if reduced:
        full = ", ".join(f"{b:.0%}" for b in FULL_BUDGETS)
        notes.append(
            f"REDUCED study (the full study: >= {FULL_POLICIES} policies at each of {full} on every base in "
            f"{', '.join(sorted(BASES))}); the figures are indicative, not the verdict."
        )
    for r in rows:
        if r["protocol"] == chosen or reduced:
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
        + (" (quick)" if args.get("quick") else ""),
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


def finished(doc: dict[str, Any], sources: int = 1) -> dict[str, Any]:
    """``doc`` (draws and points) with its rows, default protocol and table."""
    rows = rows_from_points(doc["points"], doc["prepare_seconds"])
    chosen = default_protocol(rows) if rows else "bn-recal"
    unreachable = [doc["unreachable"][k] for k in sorted(doc["unreachable"])]
    return {
        **doc,
        "partial": False,
        "rows": rows,
        "default_protocol": None if is_reduced(rows) else chosen,
        "table": table(rows, chosen, doc["args"], unreachable, sources),
    }


def merge(paths: list[Path]) -> dict[str, Any]:
    """One study from pieces (complete or partial results of this script with the same settings,
    each base and budget drawn in one piece only)."""
    docs = [json.loads(p.read_text()) for p in paths]
    check_settings(docs, [str(p) for p in paths])
    owner: dict[str, str] = {}
    out: dict[str, Any] = {**docs[0], "sources": [str(p) for p in paths], "draws": {}, "points": [],
                           "prepare_seconds": {}, "unreachable": {}, "seconds": 0.0}  # fmt: skip
    by_key: dict[str, Any] = {}  # a draw's lower bound where it predates recording its own: its piece's
    for d, path in zip(docs, paths, strict=True):
        for key, draw in d["draws"].items():
            by_key[key] = d["args"].get("lower_bound")
            if key in owner:
                raise SystemExit(f"--merge: {key} was drawn in both {owner[key]} and {path}; resume one piece instead")
            owner[key] = str(path)
            out["draws"][key] = draw
        out["points"] += d["points"]
        for model, secs in d.get("prepare_seconds", {}).items():
            out["prepare_seconds"].setdefault(model, secs)
        out["unreachable"].update(d.get("unreachable", {}))
        out["seconds"] += float(d.get("seconds", 0.0))
    bounds = {k: draw.get("lower_bound", by_key[k]) for k, draw in out["draws"].items()}
    if len(set(bounds.values())) > 1:  # named per draw in the notes
        out["args"] = {**out["args"], "lower_bound": bounds}
    return finished(out, sources=len(docs))


def scatter(points: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(p["model"], p["budget"]) for p in points})
    labels = sorted({k for p in points for k in p["scores"]})
    if not keys or not labels:  # nothing scored (every budget unreachable): no plot
        print(f"no points to plot: {out} not written", flush=True)
        return
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
    ap.add_argument("--budgets", nargs="+", type=float, default=list(FULL_BUDGETS))
    ap.add_argument("--policies", type=int, default=FULL_POLICIES)
    ap.add_argument("--ft-batches", type=int, default=BATCHES, help="the standard fine-tune's batches")
    ap.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), default=list(PROTOCOLS))
    ap.add_argument("--device", default="local-cpu-cputime")
    ap.add_argument("--latency-batch", type=int, default=32, help="the batch the budgets are measured at")
    ap.add_argument("--lower-bound", type=float, default=0.2)
    ap.add_argument("--bn-batches", type=int, default=4)
    ap.add_argument("--val-batches", type=int, default=4, help="held-out batches (of 512) scored per candidate")
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/proxy_correlation"), help="supernet checkpoints")
    ap.add_argument("--resume", type=Path, default=None, metavar="PARTIAL",
                    help="a proxy_correlation(.partial).json of an interrupted run: its draws are kept and its "
                    "policies with a point are not run again")  # fmt: skip
    ap.add_argument("--rescore", type=Path, default=None, metavar="STUDY",
                    help="score this finished study's policies with the --protocols it lacks "
                    "(no new fine-tunes)")  # fmt: skip
    ap.add_argument("--merge", nargs="+", type=Path, default=None, metavar="JSON",
                    help="join these pieces (same settings, disjoint bases and budgets) into one result")  # fmt: skip
    args = ap.parse_args()
    if args.quick:
        args.bases, args.budgets, args.policies, args.ft_batches = ["resnet20"], [0.5], 6, 30
    out_dir = args.out_dir or Path("bench/results") / (
        datetime.now().strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    )
    path = out_dir / "proxy_correlation.json"
    if args.rescore:
        again = rescore(args.rescore, args.protocols, args.cache_dir)
        write_json(path, again)
        print(json.dumps(again["table"], indent=2))
        scatter(again["points"], out_dir / "proxy_correlation.png")
        return
    if args.merge:
        merged = merge(args.merge)
        write_json(path, merged)
        print(json.dumps(merged["table"], indent=2))
        scatter(merged["points"], out_dir / "proxy_correlation.png")
        return
    torch.set_num_threads(2)
    start = time.time()
    doc: dict[str, Any] = {"benchmark": "proxy_correlation", "quick": args.quick, "partial": True,
                           "args": args_record(args), "machine": machine(), "draws": {}, "points": [],
                           "prepare_seconds": {}, "unreachable": {}}  # fmt: skip
    earlier = 0.0
    if args.resume is not None:
        old = json.loads(args.resume.read_text())
        check_settings([old], [str(args.resume)], doc["args"])
        doc.update({k: old[k] for k in ("draws", "points", "prepare_seconds", "unreachable")})
        earlier = float(old.get("seconds", 0.0))
    partial = out_dir / "proxy_correlation.partial.json"

    def save() -> None:
        write_json(partial, {**doc, "seconds": earlier + time.time() - start}, quiet=True)

    for name in args.bases:
        study(name, args, doc, save)
    doc = finished({**doc, "seconds": earlier + time.time() - start})
    write_json(path, doc)
    scatter(doc["points"], out_dir / "proxy_correlation.png")
    print(json.dumps(doc["table"], indent=2))


if __name__ == "__main__":
    main()
