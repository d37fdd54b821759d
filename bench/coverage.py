"""Coverage: is every torchvision classification model searchable and applicable, or refused clearly?

For each model of ``torchvision.models.list_models(module=torchvision.models)`` (random weights,
1000 classes, 224x224, a fixed seed), in **its own subprocess** under a wall-clock timeout and an
address-space cap (``RLIMIT_AS`` at the process's footprint after imports plus ``--memory-gb``),
so that one model cannot exhaust the machine:

1. ``build``: the model (``prunepilot.models.build_model("torchvision:NAME")``), eval mode;
2. ``space``: ``PruningSpace.build`` (the graph analysis, under its default limits);
3. ``random``: a random keep ratio per group in [0.2, 1], ``apply_policy`` (which asserts every
   group's width), then a forward pass whose output shape must equal the unpruned model's;
4. ``uniform``: the same with every group at keep ratio 0.5;
5. ``onnx``: the uniform model exported by ``prunepilot.apply.export.export_and_check`` and run
   in ONNX Runtime against eager on a batch of 2 (max |diff| <= tolerance x max(1, max |output|)).

A model is ``ok`` when every step worked, ``refused`` when prunepilot refused it with its own
:class:`~prunepilot.errors.GraphAnalysisError` (the reason names the module or operation), and
``failed`` otherwise (any other error, the timeout, the memory cap; the error is recorded). Writes
``coverage.json`` (per model: status, groups, seconds per step, peak RSS, error) with a ``table``
for ``bench/report.py``. ``--models`` runs a sample and marks the result quick.

    nice -n 19 .venv/bin/python bench/coverage.py --models resnet18,shufflenet_v2_x0_5 --out /tmp/c.json
    nice -n 19 .venv/bin/python bench/coverage.py --all        # every model, one at a time
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*

from bench.common import args_record, dated_results, machine, machine_note, print_result_table, result_table, write_json

STEPS = ("build", "space", "random", "uniform", "onnx")
TARGET_WORKING = 0.95
TARGET_REFUSAL_S = 30.0
COLUMNS = ["model", "status", "groups", *(f"{s} s" for s in STEPS), "onnx max abs diff", "peak RSS MiB", "reason"]


def all_models() -> list[str]:
    """Every classification model torchvision lists (its ``models`` module, not detection etc.)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


# --- one model, in the child process ------------------------------------------------------------


def _peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cap_memory(memory_gb: float) -> None:
    """Cap this process's address space at its footprint now plus ``memory_gb``."""
    import resource

    from prunepilot.hw_models.server_sandbox import footprint_bytes

    footprint = footprint_bytes()
    if footprint is None or memory_gb <= 0:
        return
    cap = footprint + int(memory_gb * 2**30)
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def check_model(name: str, progress: Path, *, seed: int, image: int, round_to: int, tolerance: float) -> None:
    """Run the steps on one model, appending one JSON line per finished step to ``progress``."""
    import random

    import torch

    from prunepilot.apply.export import export_and_check
    from prunepilot.models import build_model
    from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy

    def record(**entry: Any) -> None:
        with progress.open("a") as fh:
            fh.write(json.dumps({**entry, "peak_mib": _peak_mib(), "clock": time.monotonic()}) + "\n")

    torch.manual_seed(seed)
    x = torch.randn(1, 3, image, image, generator=torch.Generator().manual_seed(seed))
    t = time.perf_counter()
    model = build_model(f"torchvision:{name}", num_classes=1000).eval()
    with torch.no_grad():
        want = tuple(model(x).shape)
    record(step="build", seconds=time.perf_counter() - t)

    t = time.perf_counter()
    space = PruningSpace.build(model, x)
    record(step="space", seconds=time.perf_counter() - t, groups=len(space.groups))

    rng = random.Random(seed)
    policies = {
        "random": PruningPolicy.from_ratios(space, [rng.uniform(0.2, 1.0) for _ in space.groups], round_to=round_to),
        "uniform": PruningPolicy.uniform(space, 0.5, round_to=round_to),
    }
    for step, policy in policies.items():
        pruned = model  # the previous pruned copy goes before the next is made (peak memory)
        t = time.perf_counter()
        pruned = apply_policy(model, policy, x, space=space).eval()
        with torch.no_grad():
            got = pruned(x)
        if tuple(got.shape) != want or not bool(torch.isfinite(got).all()):
            raise AssertionError(f"{step} policy: output {tuple(got.shape)} (finite: {bool(torch.isfinite(got).all())})"
                                 f", the unpruned model gives {want}")  # fmt: skip
        record(
            step=step,
            seconds=time.perf_counter() - t,
            **{f"{step}_macs_kept": space.macs(policy.channels) / space.base_macs},
        )

    del model, space  # only the pruned model is exported: the base's memory goes first (vit_h_14)
    gc.collect()
    t = time.perf_counter()
    batch = torch.randn(2, 3, image, image, generator=torch.Generator().manual_seed(seed + 1))
    with tempfile.TemporaryDirectory() as tmp:
        check = export_and_check(pruned, "onnx", tmp, x, batch, tolerance=float("inf"))
    diff, scale = check.max_abs_diff, check.max_abs_output
    ok = check.error is None and diff is not None and diff <= tolerance * max(1.0, scale or 0.0)
    record(step="onnx", seconds=time.perf_counter() - t, max_abs_diff=diff, max_abs_output=scale)
    if not ok:
        raise AssertionError(f"ONNX differs from eager: {check.error or f'max |diff| {diff:.3g} at scale {scale:.3g}'}")


def child_main(args: argparse.Namespace) -> None:
    """``--child NAME``: one model; errors become the last progress line, never a traceback."""
    import torch

    torch.set_num_threads(args.threads)
    progress = Path(args.progress)
    _cap_memory(args.memory_gb)
    from prunepilot.errors import GraphAnalysisError

    try:
        check_model(args.child, progress, seed=args.seed, image=args.image, round_to=args.round_to,
                    tolerance=args.tolerance)  # fmt: skip
        return
    except BaseException as exc:  # noqa: BLE001 - the parent classifies every error
        clock = time.monotonic()
        status = "refused" if isinstance(exc, GraphAnalysisError) else "failed"
        text = f"{type(exc).__name__}: {exc}".strip()[:2000]
    gc.collect()  # the traceback (and what it held) is gone: writing needs memory
    with progress.open("a") as fh:
        fh.write(json.dumps({"error": text, "status": status, "peak_mib": _peak_mib(), "clock": clock}) + "\n")


# --- the parent: one subprocess per model -------------------------------------------------------


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Check one model in a subprocess; the row of ``coverage.json`` for it."""
    with tempfile.TemporaryDirectory() as tmp:
        progress = Path(tmp) / "progress.jsonl"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--progress", str(progress)]
        for flag in ("seed", "image", "round_to", "tolerance", "memory_gb", "threads"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            code: int | None = proc.returncode
            tail = (proc.stderr or "").strip().splitlines()[-1:]
        except subprocess.TimeoutExpired:
            code, tail = None, []
        wall = time.perf_counter() - start
        lines = [json.loads(line) for line in progress.read_text().splitlines()] if progress.exists() else []
    row: dict[str, Any] = {"model": name, "status": "ok", "groups": None, "seconds": {}, "peak_rss_mib": None,
                           "wall_s": wall, "error": None}  # fmt: skip
    last_clock: float | None = None
    for entry in lines:
        row["peak_rss_mib"] = entry.get("peak_mib", row["peak_rss_mib"])
        if "step" in entry:
            row["seconds"][entry["step"]] = entry["seconds"]
            row.update({k: v for k, v in entry.items() if k not in ("step", "seconds", "peak_mib", "clock")})
            last_clock = entry.get("clock")
        else:
            row["status"], row["error"] = entry["status"], entry["error"]
            if last_clock is not None and entry.get("clock") is not None:
                row["error_after_s"] = entry["clock"] - last_clock  # from the failing step's call to its error
    done = [s for s in STEPS if s in row["seconds"]]
    if row["error"] is None and len(done) < len(STEPS):
        at = STEPS[len(done)]
        row["status"] = "failed"
        if code is None:
            row["error"] = f"timeout: still in step {at!r} after {args.timeout:g} s"
        else:
            row["error"] = f"the process ended with code {code} in step {at!r}: {' '.join(tail) or 'no message'}"
    if row["error"] is not None:
        # the step it failed in; "check" when every step finished and a final check failed
        row["failed_step"] = next((s for s in STEPS if s not in row["seconds"]), "check")
    return row


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts per status, the working share, and the slowest refusal."""
    counts = Counter(r["status"] for r in rows)
    refusals = [r.get("error_after_s", r["wall_s"]) for r in rows if r["status"] == "refused"]
    walls = [r["wall_s"] for r in rows if r["status"] == "refused"]
    return {
        "models": len(rows),
        **{s: counts.get(s, 0) for s in ("ok", "refused", "failed")},
        "working_share": counts.get("ok", 0) / max(1, len(rows)),
        "slowest_refusal_s": max(refusals) if refusals else None,
        "slowest_refusal_wall_s": max(walls) if walls else None,
    }


def _reason(error: str | None) -> str | None:
    return None if error is None else error.splitlines()[0][:160]


def table(doc: dict[str, Any]) -> dict[str, Any]:
    """The BENCHMARKS.md table for a ``coverage.json`` document (also what the script prints)."""
    m, s, a = doc["machine"], doc["summary"], doc["args"]
    rows = [[r["model"], r["status"], r["groups"], *(r["seconds"].get(st) for st in STEPS), r.get("max_abs_diff"),
             r["peak_rss_mib"], _reason(r["error"])] for r in doc["rows"]]  # fmt: skip
    met = "met" if s["working_share"] >= TARGET_WORKING and s["failed"] == 0 else "NOT met"
    if doc.get("quick"):
        met += " on this sample; the target is judged on --all"
    slow = s["slowest_refusal_s"]
    refusal = (
        "no refusals"
        if slow is None
        else (
            f"slowest refusal {slow:.1f} s from the call that refused to its error (target <= {TARGET_REFUSAL_S:g} s; "
            f"{s.get('slowest_refusal_wall_s') or slow:.1f} s wall with the interpreter's start and building the model)"
        )
    )
    sample = "a sample of" if doc.get("quick") else "every one of"
    return result_table(
        "torchvision classification models: pruning coverage" + (" (quick)" if doc.get("quick") else ""),
        COLUMNS,
        rows,
        [f"{sample} torchvision's classification models, random weights, 1000 classes, "
         f"{a['image']}x{a['image']}, seed {a['seed']}; round_to {a['round_to']}; each model in its own process "
         f"(timeout {a['timeout']:g} s, address space capped at footprint + {a['memory_gb']:g} GiB), "
         f"{a['threads']} torch thread(s).",
         f"{s['ok']} ok, {s['refused']} refused, {s['failed']} failed of {s['models']}: "
         f"{100 * s['working_share']:.0f}% working (target >= {100 * TARGET_WORKING:.0f}%, none failed: {met}); "
         f"{refusal}.",
         "ok: space built, a random and a uniform 0.5 policy applied with every group's width asserted and the "
         "output shape kept, ONNX (dynamo exporter, ONNX Runtime CPU) equal to eager within "
         f"{a['tolerance']:g} x max(1, max |output|). refused: prunepilot's GraphAnalysisError naming the "
         "module or operation. Seconds per step; peak RSS of the model's process.",
         machine_note(m.get("cpu"), m.get("cores"), m.get("platform"), doc["versions"])],
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--models", help="comma-separated torchvision model names (a sample: the result is quick)")
    which.add_argument("--all", action="store_true", help="every classification model torchvision lists")
    which.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--progress", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/<date>[-quick]/coverage.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image", type=int, default=224, help="input height and width")
    ap.add_argument("--round-to", type=int, default=8, help="widths are multiples of this")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="ONNX vs eager, relative to max(1, max |output|)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per model (its process is killed after)")
    ap.add_argument("--memory-gb", type=float, default=8.0, help="address space per model above its footprint")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per model process")
    ap.add_argument("--resume", action="store_true", help="keep the rows of an interrupted run (OUT.rows.jsonl)")
    args = ap.parse_args(argv)
    if args.child:
        child_main(args)
        return
    if not args.all and not args.models:
        ap.error("give --models NAME,NAME or --all")
    known = all_models()
    names = known if args.all else [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"not torchvision classification models: {unknown}; e.g. {known[:6]}")
    quick = not args.all
    out = args.out or (dated_results().with_name(dated_results().name + ("-quick" if quick else "")) / "coverage.json")
    from prunepilot.hw_models.base import runtime_versions

    # every row is appended as it is made, so an interrupted run keeps what it measured (--resume)
    partial = out.with_name(out.stem + ".rows.jsonl")
    done: dict[str, dict[str, Any]] = {}
    if args.resume and partial.is_file():
        done = {r["model"]: r for r in map(json.loads, partial.read_text().splitlines()) if r.get("model") in names}
    else:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("")
    rows = []
    for i, name in enumerate(names, 1):
        row = done.get(name) or run_model(name, args)
        if name not in done:
            with partial.open("a") as fh:
                fh.write(json.dumps(row, default=str) + "\n")
        rows.append(row)
        print(f"[{i}/{len(names)}] {name}: {row['status']} in {row['wall_s']:.1f} s {_reason(row['error']) or ''}",
              flush=True)  # fmt: skip
    doc: dict[str, Any] = {
        "benchmark": "coverage",
        "quick": quick,
        "args": {**args_record(args), "child": None, "progress": None},
        "summary": summary(rows),
        "rows": rows,
        "machine": machine(),
        "versions": runtime_versions("torchvision", "onnx", "onnxruntime"),
    }
    doc["table"] = table(doc)
    write_json(out, doc)
    partial.unlink()
    print_result_table(doc["table"])


if __name__ == "__main__":
    main()
