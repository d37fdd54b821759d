"""Profiling a lookup table: ``prunepilot profile --device NAME --model SPEC --out LUT.json``.

Finds every distinct layer type of the model, times it as the block it runs in (convolution +
BatchNorm + ReLU, depthwise likewise, linear alone) over a grid of input x output channel
counts at the model's spatial sizes (with a progress bar), plus a few random off-grid points
per type (training data for :mod:`prunepilot.hw_models.learned`, and the check that picks
stepped or plain interpolation), then times the whole model at full width and uniformly pruned
to fit the table's scale and overhead. The
JSON records the device, runtime, clock, versions, threads, batch size, grid and protocol.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from prunepilot.hw_models.base import HardwareError, runtime_versions
from prunepilot.hw_models.lut import LookupTable, LutEntry, layer_key, quantize
from prunepilot.hw_models.measure import MeasureProtocol, cpu_name, time_cpu_callable, torch_threads
from prunepilot.pruning.layers import LayerShape

#: Grid points per channel axis, as fractions of the largest full width of that layer type.
DEFAULT_FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)
#: Per-point protocol: layers are small, so fewer, shorter runs than a whole model.
LAYER_PROTOCOL = MeasureProtocol(warmup=2, min_runs=7, min_seconds=0.05, max_seconds=5.0, max_attempts=2)


def default_channel_block() -> int:
    """SIMD width in fp32 lanes of this CPU: oneDNN blocks channels by it, so latency steps there.

    16 with AVX-512, 8 with AVX/AVX2, 4 otherwise (NEON, SSE).
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    if "avx512f" in flags:
        return 16
    if "avx2" in flags or "avx" in flags:
        return 8
    return 4


def _axis(full: int, fractions: Sequence[float], block: int) -> list[int]:
    if full < 8:  # input image channels, tiny heads: not worth a grid
        return [full]
    if full < 4 * block:  # too narrow for block multiples to resolve anything
        block = 1
    return sorted({int(quantize(max(1, round(full * f)), block)) for f in fractions})


def _padding(in_size: int, out_size: int, k: int, s: int) -> int:
    return max(0, math.ceil(((out_size - 1) * s + k - in_size) / 2))


def layer_block(entry: LutEntry, cin: int, cout: int) -> tuple[nn.Module, tuple[int, ...]]:
    """The module timed for one grid point and its per-sample input shape."""
    if entry.kind == "linear":
        return nn.Linear(cin, cout), ((entry.tokens, cin) if entry.tokens > 1 else (cin,))
    (kh, kw), (sh, sw), (h, w), (oh, ow) = entry.kernel, entry.stride, entry.in_hw, entry.out_hw
    pad = (_padding(h, oh, kh, sh), _padding(w, ow, kw, sw))
    if entry.kind == "depthwise":
        groups, out = cin, cin * max(1, int(entry.key.rsplit(" m", 1)[1]))
    else:
        groups, out = entry.groups, cout
        cin, out = max(cin, groups) // groups * groups, max(out, groups) // groups * groups
    conv = nn.Conv2d(cin, out, (kh, kw), (sh, sw), pad, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out), nn.ReLU(inplace=True)), (cin, h, w)


def time_block(entry: LutEntry, cin: int, cout: int, batch_size: int, protocol: MeasureProtocol) -> tuple[float, float]:
    """``(median ms, CV)`` of one block at ``(cin, cout)`` (threads set by the caller)."""
    block, shape = layer_block(entry, cin, cout)
    block.eval()
    x = torch.randn(batch_size, *shape, generator=torch.Generator().manual_seed(protocol.seed))
    with torch.inference_mode():
        stats = time_cpu_callable(lambda: block(x), protocol)
    return stats.median_ms, stats.cv


def entries_for(
    layers: Sequence[LayerShape], fractions: Sequence[float] = DEFAULT_FRACTIONS, block: int = 1
) -> dict[str, LutEntry]:
    """Empty table entries (grid only) for the layer types in ``layers`` at full width."""
    full: dict[str, list[LayerShape]] = {}
    for s in layers:
        full.setdefault(layer_key(s), []).append(s)
    out = {}
    for key, group in full.items():
        s0 = group[0]
        cin = _axis(max(s.in_channels for s in group), fractions, block)
        cout = [0] if s0.kind == "depthwise" else _axis(max(s.out_channels for s in group), fractions, block)
        out[key] = LutEntry(
            key=key, kind=s0.kind, kernel=s0.kernel, stride=s0.stride, in_hw=s0.in_hw, out_hw=s0.out_hw,
            groups=s0.groups, tokens=s0.tokens, cin=cin, cout=cout, ms=[[0.0] * len(cout) for _ in cin], block=block,
            cv=[[0.0] * len(cout) for _ in cin],
        )  # fmt: skip
    return out


def profile_layers(
    layers: Sequence[LayerShape],
    batch_size: int = 1,
    protocol: MeasureProtocol = LAYER_PROTOCOL,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    extra_samples: int = 6,
    seed: int = 0,
    progress: bool = True,
    block: int = 1,
    rounds: int = 1,
) -> dict[str, LutEntry]:
    """Time every grid point (and ``extra_samples`` random off-grid points) of each layer type.

    With ``rounds > 1`` every point is timed once per round (rounds interleaved) and the lowest
    round median is kept, so a burst of load from other processes spoils one round only.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    entries = entries_for(layers, fractions, block)
    rng = random.Random(seed)
    jobs: list[tuple[LutEntry, int, int, tuple[int, int] | None]] = []
    for e in entries.values():
        jobs += [(e, i, j, None) for i in range(len(e.cin)) for j in range(len(e.cout))]
        for _ in range(extra_samples if len(e.cin) > 1 else 0):
            c = rng.randint(max(1, e.cin[0]), e.cin[-1])
            o = 0 if e.cout == [0] else rng.randint(max(1, e.cout[0]), e.cout[-1])
            jobs.append((e, -1, -1, (c, o)))
    best: list[tuple[float, float]] = [(math.inf, 0.0)] * len(jobs)
    columns = (TextColumn("profiling layers"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with torch_threads(protocol.threads), Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("profile", total=len(jobs) * max(1, rounds))
        for _ in range(max(1, rounds)):
            for k, (e, i, j, off) in enumerate(jobs):
                cin, cout = (e.cin[i], e.cout[j]) if off is None else off
                ms, cv = time_block(e, cin, cout, batch_size, protocol)
                if ms < best[k][0]:
                    best[k] = (ms, cv)
                bar.advance(task)
    for (e, i, j, off), (ms, cv) in zip(jobs, best, strict=True):
        if off is None:
            e.ms[i][j], e.cv[i][j] = ms, cv
        else:
            e.samples.append([off[0], off[1], ms])
    for e in entries.values():
        choose_step_mode(e)
    return entries


def choose_step_mode(entry: LutEntry) -> None:
    """Set ``entry.step`` to whichever lookup (stepped at the block, or plain bilinear) is closer
    to the entry's off-grid samples (median relative error); plain when there are none."""
    if entry.block <= 1 or not entry.samples:
        entry.step = False
        return

    def err(step: bool) -> float:
        entry.step = step
        rel = sorted(abs(entry.lookup(c, o) / ms - 1) for c, o, ms in entry.samples if ms > 0)
        return rel[len(rel) // 2] if rel else math.inf

    entry.step = err(True) < err(False)


def _uniform_pruned(model: nn.Module, shape: tuple[int, ...], ratio: float) -> nn.Module:
    """``model`` with every prunable group kept at ``ratio`` (via the pruning core)."""
    from prunepilot.pruning import PruningPolicy, PruningSpace, apply_policy

    x = torch.randn(*shape)
    space = PruningSpace.build(model, x)
    return apply_policy(model, PruningPolicy.uniform(space, ratio), x, space=space)


def profile_model(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    device: str = "local",
    model_spec: str = "",
    threads: int | None = 1,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    extra_samples: int = 6,
    progress: bool = True,
    model_protocol: MeasureProtocol | None = None,
    channel_block: int | None = None,
    rounds: int = 1,
    clock: str = "wall",
    fit_ratios: Sequence[float] = (0.5,),
) -> LookupTable:
    """Profile a lookup table for ``model`` at ``input_shape`` on this machine's CPU (torch eager).

    ``channel_block`` (default: :func:`default_channel_block`) is the step of the latency
    staircase over channel counts; grid points sit on its multiples and queries round up to it.
    ``rounds`` interleaved timing rounds keep the lowest median of each point (and of the model).
    ``clock`` is the :class:`MeasureProtocol` clock (``"thread"`` needs ``threads=1``).

    The whole model is measured at full width and, for each of ``fit_ratios``, uniformly pruned
    to that keep ratio. With one point the table gets a fixed overhead (``measured - table``);
    with two or more, ``scale`` and ``overhead_ms`` are fitted by least squares, because layers
    timed alone run faster than inside the network (warm caches) by a roughly constant factor.
    Pass ``fit_ratios=()`` for the fixed overhead only (no pruning needed).
    """
    from prunepilot.hw_models.layer_trace import trace_layers
    from prunepilot.hw_models.measure import TorchCPULatency

    shape = tuple(int(s) for s in input_shape)
    layers = trace_layers(model, shape)
    if not layers:
        raise HardwareError(f"{type(model).__name__} has no convolution/linear layers to profile")
    t0 = time.perf_counter()
    layer_protocol = MeasureProtocol(**{**asdict(LAYER_PROTOCOL), "threads": threads, "clock": clock})
    block = default_channel_block() if channel_block is None else int(channel_block)
    entries = profile_layers(
        layers, shape[0], layer_protocol, fractions, extra_samples, progress=progress, block=block, rounds=rounds
    )
    mp = model_protocol or MeasureProtocol(threads=threads, clock=clock)
    timer = TorchCPULatency(**asdict(mp))
    table = LookupTable(entries, 0.0, shape[0])
    models = [(1.0, model)] + [(r, _uniform_pruned(model, shape, r)) for r in fit_ratios if 0 < r < 1]
    points: list[dict[str, Any]] = []
    xs: list[float] = []
    ys: list[float] = []
    for ratio, net in models:
        res = min((timer.measure_ms(net, shape, shape[0]) for _ in range(max(1, rounds))), key=lambda r: r.ms)
        xs.append(table.table_ms(trace_layers(net, shape)))
        ys.append(res.ms)
        points.append({"keep_ratio": ratio, "measured_ms": res.ms, "cv": res.cv, "table_ms": xs[-1]})
    table.overhead_ms = ys[0] - xs[0]
    if len(xs) >= 2 and max(xs) > min(xs):
        scale, offset = (float(v) for v in np.polyfit(xs, ys, 1))
        if scale > 0:
            table.scale, table.overhead_ms = scale, offset
    table.meta = {
        "device": device,
        "cpu": cpu_name(),
        "runtime": "torch-eager-cpu",
        "clock": clock,
        "versions": runtime_versions(),
        "threads": threads,
        "model": model_spec or type(model).__name__,
        "input_shape": list(shape),
        "grid_fractions": list(fractions),
        "channel_block": block,
        "rounds": rounds,
        "layer_protocol": layer_protocol.record(),
        "model_measured_ms": ys[0],
        "model_measured_cv": points[0]["cv"],
        "model_table_ms": xs[0],
        "fit_points": points,
        "profile_seconds": time.perf_counter() - t0,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return table
