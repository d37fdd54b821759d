"""The verdict of ``search_quality`` runs at the same measured latency: every pick and a uniform
curve, measured side by side in one session, after the searches.

Why a separate step: on this shared machine a latency measured at one moment does not compare
with one measured at another, and not even as a share of the base measured beside it (load
inflates a large model's thread-CPU time more than a small one's: in one run the base read 33 ms
when the searches started and 24 ms beside the picks later). A budget the searches enforced in
milliseconds is therefore not the share of the base it was meant to be, and two picks measured
after two different searches are not at comparable latencies. Here, once no search runs:

1. every pick of the given runs (``search_quality.json`` or ``.partial.json`` files, rows with a
   ``policy``) and a **uniform curve** (uniform keep ratios ``--ratios``) are pruned and measured
   with the base in ``--rounds`` rounds, paired (``bench.search_quality.measure_paired``: each
   timing follows one of the base, ``--instances`` fresh models per policy used in turn, the order
   shuffled every round): each one's ``share`` of the base, and its quartiles;
2. the uniform curve's policies get the standard fine-tune (``bench/finetune.py``, the recipe
   the picks got in their runs) and their test accuracy;
3. each pick's test accuracy is compared with the uniform curve's at the pick's own share
   (linear interpolation; a share outside the curve is flagged, never extrapolated):
   ``delta = pick - uniform at the same measured latency``, in points.

The table gives, per model, budget (as the run named it) and strategy, the median over seeds of
the share, the fine-tuned test accuracy, the uniform accuracy at that share and the delta, and
#16's targets on the deltas: the best searched strategy's delta >= 1.0 point (beats uniform),
its delta >= random search's + 0.5, and above Torch-Pruning's global pruning's; amc-ddpg's above
random's.

    python bench/sq_final.py RUN.json [RUN.json ...]     # writes search_quality_final.json beside --out
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.common import dated_results, machine, machine_note, print_result_table, result_table, write_json
from bench.sq_summary import BASELINES, PEERS
from prunepilot.hw_models.base import runtime_versions
from prunepilot.pruning import PruningPolicy

#: uniform keep ratios of the curve (the lower bound is the search's; ratios below it are dropped)
RATIOS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 1.0)
OVER_UNIFORM, OVER_RANDOM = 1.0, 0.5  # points
COLUMNS = [
    "model",
    "budget (as run)",
    "strategy",
    "seeds",
    "measured share median",
    "fine-tuned test acc median",
    "uniform at that share median",
    "delta vs uniform median (points)",
    "outside the curve",
    "share IQR on the curve (points)",
]


def interpolate(curve: list[tuple[float, float]], share: float) -> float | None:
    """The uniform curve's accuracy at ``share`` (linear between its points); None outside it."""
    xs, ys = zip(*sorted(curve), strict=True)
    if share < xs[0] or share > xs[-1]:
        return None
    return float(np.interp(share, xs, ys))


def picks(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``docs`` that hold a fine-tuned policy, each once (a later file's row wins)."""
    out: dict[tuple[str, float, str, int, str], dict[str, Any]] = {}
    for doc in docs:
        mode = str(doc.get("settings", {}).get("in_loop_latency", "predicted"))
        for row in doc.get("rows", []):
            if row.get("policy") is not None and row.get("finetuned_test_acc") is not None:
                row.setdefault("in_loop_latency", mode)
                out[row["model"], round(row["budget_ms"], 3), row["strategy"], row["seed"], mode] = row
    return list(out.values())


def finish_model(
    model: str, rows: list[dict[str, Any]], settings: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """Steps 1-3 for one model's picks; returns ``{"curve": [...], "rows": [...]}`` (rows updated)."""
    import bench.search_quality as sq
    from bench.finetune import finetune_test

    sq_args = sq.parse_args(
        ["--device", settings.get("device", "local-cpu-cputime"), "--latency-batch",
         settings.get("latency_batch", "32"), "--lower-bound", settings.get("lower_bound", "0.2"),
         "--rounds", str(args.rounds)]
    )  # fmt: skip
    if args.data_root is not None:
        sq_args.data_root = args.data_root
    ctx = sq.context(sq_args, model)
    lower = float(settings.get("lower_bound", "0.2"))
    ratios = [r for r in args.ratios if r >= lower - 1e-9]
    uniform = [PruningPolicy.uniform(ctx.ev.space, r, importance=ctx.ev.cfg.evaluation.importance) for r in ratios]
    chosen = [PruningPolicy.from_json(json.dumps(r["policy"])) for r in rows]
    started = time.time()
    base_ms, paired = sq.measure_paired(ctx.ev, [*uniform, *chosen], args.rounds, args.instances)
    measure_s = time.time() - started
    curve = []
    for r, policy, m in zip(ratios, uniform, paired[: len(uniform)], strict=True):
        ft = finetune_test(ctx.ev, policy, args.finetune_batches)
        curve.append({"keep": r, "channels": dict(policy.channels), "measured_ms": m.ms, "share": m.share,
                      "share_q1": m.q1, "share_q3": m.q3, "finetuned_test_acc": ft})  # fmt: skip
        print(f"{model} uniform {r:.2f}: share {m.share:.3f} [{m.q1:.3f}, {m.q3:.3f}], fine-tuned test {ft:.4f}",
              flush=True)  # fmt: skip
    points = [(c["share"], c["finetuned_test_acc"]) for c in curve]
    for row, m in zip(rows, paired[len(uniform) :], strict=True):
        at = interpolate(points, m.share)
        lo, hi = interpolate(points, m.q1), interpolate(points, m.q3)
        row["final"] = {
            "measured_ms": m.ms,
            "share": m.share,
            "share_q1": m.q1,
            "share_q3": m.q3,
            "uniform_at_share": at,
            "delta_points": None if at is None else 100.0 * (row["finetuned_test_acc"] - at),
            # how far the uniform reference moves across the pick's own share quartiles
            "band_points": None if lo is None or hi is None else 100.0 * abs(hi - lo),
        }
    return {"base_ms": base_ms, "curve": curve, "measure_seconds": measure_s, "rounds": args.rounds,
            "instances": args.instances, "paired": True}  # fmt: skip


def budget_label(row: dict[str, Any]) -> str:
    """The budget a row's search was given: its fraction of the base measured then, and the ms;
    and how its in-loop latency was had where not predicted (``anchored``: timed beside the base)."""
    mode = row.get("in_loop_latency", "predicted")
    return f"{row['budget']:.0%} ({row['budget_ms']:.2f} ms)" + ("" if mode == "predicted" else f", in-loop {mode}")


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, budget in ms, strategy): medians over seeds of the final figures. Runs whose base
    read differently give the same fraction different budgets in ms: those are kept apart."""
    out = []

    def key(r: dict[str, Any]) -> tuple[str, float, str, str]:
        return (r["model"], round(r["budget_ms"], 3), budget_label(r), r["strategy"])

    for model, ms, _label, strategy in sorted({key(r) for r in rows}, key=lambda k: (k[0], -k[1], k[2], k[3])):
        mine = [r for r in rows if key(r) == (model, ms, _label, strategy)]
        deltas = [r["final"]["delta_points"] for r in mine if r["final"]["delta_points"] is not None]
        ats = [r["final"]["uniform_at_share"] for r in mine if r["final"]["uniform_at_share"] is not None]
        bands = [r["final"]["band_points"] for r in mine if r["final"].get("band_points") is not None]
        out.append(
            {
                "model": model,
                "budget": budget_label(mine[0]),
                "budget_ms": ms,
                "strategy": strategy,
                "seeds": len(mine),
                "share_median": statistics.median(r["final"]["share"] for r in mine),
                "ft_median": statistics.median(r["finetuned_test_acc"] for r in mine),
                "uniform_at_median": statistics.median(ats) if ats else None,
                "delta_median": statistics.median(deltas) if deltas else None,
                "outside": len(mine) - len(deltas),
                "band_median": statistics.median(bands) if bands else None,
            }
        )
    return out


def target_notes(entries: list[dict[str, Any]]) -> list[str]:
    """#16's targets on the same-latency deltas, MET / NOT MET, per model and budget."""
    notes = []
    for model, budget in dict.fromkeys((e["model"], e["budget"]) for e in entries):
        at = {e["strategy"]: e["delta_median"] for e in entries if (e["model"], e["budget"]) == (model, budget)}
        where = f"{model}, budget {budget} (as run)"
        searched = {k: v for k, v in at.items() if k not in BASELINES and v is not None}
        if not searched:
            notes.append(f"{where}: no searched strategy has a same-latency figure: every target NOT MET.")
            continue
        best = max(searched, key=lambda k: searched[k])
        d = searched[best]
        verdict = "MET" if d >= OVER_UNIFORM else "NOT MET"
        notes.append(f"{where}: best searched {best} is {d:+.2f} points vs uniform at its latency "
                     f"(target >= +{OVER_UNIFORM:.1f}): {verdict}.")  # fmt: skip
        for ref, margin in (("random", OVER_RANDOM), (PEERS[0], 0.0)):
            if at.get(ref) is None:
                notes.append(f"{where}: {ref} has no same-latency figure: the target against it is NOT MET.")
                continue
            ok = d - at[ref] >= margin if margin else d > at[ref]
            notes.append(
                f"{where}: {best} {d:+.2f} vs {ref} {at[ref]:+.2f} points (target: "
                + (f"ahead by >= {margin:.1f}" if margin else "ahead")
                + f"): {'MET' if ok else 'NOT MET'}."
            )
        if at.get("amc-ddpg") is not None and at.get("random") is not None:
            ok = at["amc-ddpg"] > at["random"]
            notes.append(f"{where}: amc-ddpg {at['amc-ddpg']:+.2f} vs random {at['random']:+.2f} points "
                         f"(target: ahead): {'MET' if ok else 'NOT MET'}.")  # fmt: skip
    return notes


def jump_notes(doc: dict[str, Any]) -> list[str]:
    """Where the uniform curve jumps: picks between those shares are compared with a straight line
    between two uniform policies, and no uniform policy may lie on it."""
    notes = []
    for model, info in doc["models"].items():
        curve = sorted(info["curve"], key=lambda c: c["keep"])
        steps = [(b["share"] - a["share"], a, b) for a, b in zip(curve, curve[1:], strict=False)]
        if not steps:
            continue
        size, a, b = max(steps, key=lambda t: t[0])
        median = statistics.median(t[0] for t in steps)
        if size > 3 * max(median, 1e-9):
            notes.append(
                f"{model}: the uniform curve jumps from keep {a['keep']:.2f} (share {a['share']:.3f}) to "
                f"{b['keep']:.2f} (share {b['share']:.3f}), {size / max(median, 1e-9):.0f}x its median step: latency "
                "is not smooth in width here (oneDNN's conv kernels step with the channel count: on this CPU a "
                "3x3 conv at batch 32 costs 2x at 16 channels what it costs at 15 on 32x32 maps, 2.7x at 18 what it "
                "costs at 16 on 16x16, and 32 channels cost less than 24 there), so a pick "
                "between those shares is compared with a straight line between two uniform policies, and its delta "
                "carries that uncertainty."
            )
    return notes


def repeat_notes(doc: dict[str, Any]) -> list[str]:
    """The measurement's own repeatability: a pick that is a policy of the curve (the same widths)
    was measured twice in the session, as a pick and as a curve point; the two shares of the same
    architecture say how far a share can move between two instances, and what that is worth in
    points on the curve there."""
    notes = []
    for model, info in doc["models"].items():
        points = [(c["share"], c["finetuned_test_acc"]) for c in info["curve"]]
        for row in (r for r in doc["rows"] if r["model"] == model and r.get("final")):
            widths = (row.get("policy") or {}).get("channels")
            same = [c for c in info["curve"] if widths and c.get("channels") == widths]
            if not same:
                continue
            a, b = row["final"]["share"], same[0]["share"]
            at_a, at_b = interpolate(points, a), interpolate(points, b)
            worth = "" if at_a is None or at_b is None else f", {100 * abs(at_a - at_b):.1f} points on the curve"
            apart = 100 * abs(a - b) / b
            notes.append(
                f"Repeatability: {model} {row['strategy']} ({budget_label(row)}) is uniform keep "
                f"{same[0]['keep']:.2f}, measured in this session at share {a:.3f} as a pick and {b:.3f} as a curve "
                f"point ({apart:.0f}% apart{worth}): deltas smaller than that are not resolved by this measurement."
            )
    return notes


def final_table(doc: dict[str, Any]) -> dict[str, Any]:
    entries = doc["summary"]
    rows = [[e["model"], e["budget"], e["strategy"], e["seeds"], e["share_median"], e["ft_median"],
             e["uniform_at_median"], e["delta_median"], e["outside"], e.get("band_median")]
            for e in entries]  # fmt: skip
    paired = all(m.get("paired") for m in doc["models"].values())
    how = (
        f"paired: every timing of a policy follows a timing of the base, share = the median of those ratios over "
        f"{doc['rounds']} rounds, each policy pruned into "
        + "/".join(str(m.get("instances", 1)) for m in doc["models"].values())
        + " fresh models used in turn, the order shuffled every round; 'share IQR on the curve' is how far the "
        "uniform curve moves across a pick's quartiles of those ratios (a delta smaller than it is not resolved)"
        if paired
        else "share = median latency / the base's median in those rounds"
    )
    notes = [
        "Every pick (the best policy within budget of each search in the source runs) and a uniform curve measured "
        "side by side with the base in one session after the searches, in "
        f"{doc['rounds']} interleaved rounds (measured latency, device {doc['settings'].get('device', '?')} at batch "
        f"{doc['settings'].get('latency_batch', '?')}); {how}.",
        "Fine-tuned test acc: the standard fine-tune (bench/finetune.py) of the pick, from its run; the uniform curve "
        "got the same fine-tune here. Delta: pick minus the uniform curve interpolated at the pick's share, in points; "
        "a pick whose share lies outside the curve has no delta (counted in 'outside the curve').",
        "Budget (as run): the fraction of the base latency the searches were given, of the base measured when they "
        "started; the measured share beside the base afterwards can differ (see the share column).",
        "Uniform curve: "
        + "; ".join(
            f"{c['keep']:.2f} -> share {c['share']:.3f}, test {c['finetuned_test_acc']:.4f}"
            for m in doc["models"].values()
            for c in m["curve"]
        )  # fmt: skip
        + ".",
        *jump_notes(doc),
        *repeat_notes(doc),
        *target_notes(entries),
        "Sources: " + ", ".join(doc["sources"]) + ".",
        machine_note(
            doc["machine"].get("cpu"), doc["machine"].get("cores"), doc["machine"].get("platform"), doc["versions"]
        ),  # fmt: skip
    ]
    return result_table("Search quality at the same measured latency: every pick against the uniform curve", COLUMNS,
                        rows, notes)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    import os

    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="search_quality.json or search_quality.partial.json files")
    ap.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS), help="uniform keep ratios of the curve")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved measurement rounds")
    ap.add_argument("--instances", type=int, default=3, help="fresh pruned models per policy, used in turn")
    ap.add_argument("--finetune-batches", type=int, default=None, help="default: the runs' own")
    ap.add_argument("--data-root", type=Path, default=os.environ.get("PRUNEPILOT_DATA"))
    ap.add_argument("--out", type=Path, default=dated_results())
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    docs = [json.loads(p.read_text()) for p in args.runs]
    settings = dict(docs[0].get("settings", {}))
    if args.finetune_batches is None:
        args.finetune_batches = int(settings.get("finetune_batches", "100"))
    rows = picks(docs)
    doc: dict[str, Any] = {
        "benchmark": "search_quality_final",
        "sources": [str(p) for p in args.runs],
        "settings": settings,
        "rounds": args.rounds,
        "models": {},
        "machine": machine(),
        "versions": runtime_versions(),
    }
    for model in dict.fromkeys(r["model"] for r in rows):
        doc["models"][model] = finish_model(model, [r for r in rows if r["model"] == model], settings, args)
    doc["rows"] = rows
    doc["summary"] = summary(rows)
    doc["table"] = final_table(doc)
    write_json(args.out / "search_quality_final.json", doc)
    print_result_table(doc["table"])


if __name__ == "__main__":
    main()
