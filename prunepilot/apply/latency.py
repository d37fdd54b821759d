"""Latency of the applied model on a device, next to the figure the search picked the policy on.

A policy exported by ``prunepilot pareto RUN --export`` carries ``metadata.metrics`` (the
search's ``latency_ms``, ``latency_kind`` and ``latency_model``) and ``metadata.run`` (the run
folder). When that folder is still there, its ``config.yaml`` says which device and batch size
the search used (read through :class:`~prunepilot.search.store.RunStore`, the run folder's one
reader; ``metadata.device`` names the device instead when the policy was exported for another
device of the search, ``prunepilot pareto RUN --device NAME``); apply measures on the same ones
unless told otherwise, so the two figures are comparable. The difference is reported in percent
of the search figure; ``within_10pct`` is judged only when both figures are measured with the
same latency model (a prediction is reported, not judged).

A shared machine drifts: the same model can time 20% slower an hour later. When the run folder's
``run.json`` still holds the base model's search-time latency, the base is measured again here
and the difference is also given **drift-corrected** (the applied figure divided by the base's
slow-down), i.e. the applied speed-up against the search's speed-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from prunepilot.hw_models.base import LatencyResult
from prunepilot.pruning import PruningPolicy

TOLERANCE_PCT = 10.0
"""Measured latency within this many percent of a measured search figure counts as confirmed."""

DEFAULT_DEVICE = "local-cpu-cputime"
"""Where apply measures when neither the flag nor the policy names a device: this CPU, thread-CPU clock."""

ROUNDS = 3
"""Measured latency models time the base and the applied model alternately this many times and
report the medians, so a burst of load on a shared machine does not decide the comparison."""


@dataclass(frozen=True)
class SearchContext:
    """What the search recorded about a policy (all fields None when it recorded nothing).

    Attributes:
        latency_ms: The search-time latency of the policy.
        latency_kind: ``measured`` or ``predicted``.
        latency_model: The latency model that gave it (``torch-cpu``, ``lut``...).
        accuracy: The search-time accuracy (held-out training data, BN recalibrated).
        device: The search's device name, from the run folder's ``config.yaml`` (or the policy's
            ``metadata.device`` when it was exported for another device of the search).
        batch_size: The search's latency batch size, from the same file.
        ignored_layers: Modules the search never pruned, from the same file.
        run: The run folder named by the policy.
        base_latency_ms: The base model's search-time latency, from the run's ``run.json``.
    """

    latency_ms: float | None = None
    latency_kind: str | None = None
    latency_model: str | None = None
    accuracy: float | None = None
    device: str | None = None
    batch_size: int | None = None
    ignored_layers: tuple[str, ...] | None = None
    run: str | None = None
    base_latency_ms: float | None = None


def search_context(policy: PruningPolicy) -> SearchContext:
    """Read the search's figures from the policy's metadata and, if present, its run folder."""
    meta = policy.metadata
    raw_metrics = meta.get("metrics")
    metrics: dict[str, Any] = raw_metrics if isinstance(raw_metrics, dict) else {}
    run = meta.get("run")
    device = batch = ignored = base_ms = None
    if run:
        from prunepilot.errors import ConfigError
        from prunepilot.search.store import RunStore

        store = RunStore(str(run))
        try:
            raw = store.read_config() if store.is_run else {}
        except ConfigError:  # a moved or half-written run: apply goes on without its settings
            raw = {}
        dev = raw.get("device") or {}
        other = meta.get("device")  # exported for another device of the search (device.also)
        device = other or dev.get("name")
        batch = dev.get("batch_size")
        layers = (raw.get("model") or {}).get("ignored_layers")
        ignored = tuple(layers) if layers else None
        base_ms = store.base_latency_ms(str(other) if other else None)
    ms = metrics.get("latency_ms")
    acc = metrics.get("accuracy")
    return SearchContext(
        latency_ms=float(ms) if ms is not None else None,
        latency_kind=metrics.get("latency_kind"),
        latency_model=metrics.get("latency_model"),
        accuracy=float(acc) if acc is not None else None,
        device=str(device) if device else None,
        batch_size=int(batch) if batch else None,
        ignored_layers=ignored,
        run=str(run) if run else None,
        base_latency_ms=float(base_ms) if base_ms is not None else None,
    )


def _median(results: list[LatencyResult]) -> LatencyResult:
    ordered = sorted(results, key=lambda r: r.ms)
    return ordered[(len(ordered) - 1) // 2]


def measure_latency(
    base: nn.Module,
    pruned: nn.Module,
    input_shape: tuple[int, ...],
    *,
    device: str,
    batch_size: int | None,
    search: SearchContext,
    comparable: bool = True,
) -> dict[str, Any]:
    """Latency of the base and the pruned model on ``device``, compared with the search figure.

    Measured latency models time base and pruned model alternately :data:`ROUNDS` times; the
    medians are reported (each round in ``rounds``).

    Args:
        base: The unpruned model.
        pruned: The applied model.
        input_shape: ``(N, C, H, W)``; the batch dimension is replaced by the batch size.
        device: Device name or YAML path (see :func:`prunepilot.hw_models.devices.load_device`).
        batch_size: Latency batch size (None: the device config's).
        search: What the search recorded.
        comparable: False when the policy was adapted (``--by-ratio``), so its search figure
            belongs to another model: reported, never judged.

    Returns:
        The ``latency`` section of the report.
    """
    from prunepilot.hw_models.devices import load_device

    dev = load_device(device)
    lm = dev.build()
    bs = int(batch_size or dev.batch_size)
    runs: list[tuple[LatencyResult, LatencyResult]] = []
    for _ in range(ROUNDS if lm.requires_model else 1):
        runs.append((lm.measure_ms(base, input_shape, bs), lm.measure_ms(pruned, input_shape, bs)))
    res_base = _median([b for b, _ in runs])
    res = _median([p for _, p in runs])
    section: dict[str, Any] = {
        "device": dev.name,
        "latency_model": res.model_name,
        "kind": res.kind,
        "unit": str(res.details.get("unit", "ms")),
        "batch_size": bs,
        "base_ms": res_base.ms,
        "pruned_ms": res.ms,
        "speedup": res_base.ms / res.ms if res.ms > 0 else None,
        "cv": res.cv,
        "rounds": [{"base_ms": b.ms, "pruned_ms": p.ms} for b, p in runs],
        "unstable": res.unstable,
        "search": {"ms": search.latency_ms, "kind": search.latency_kind, "latency_model": search.latency_model},
        "diff_pct": None,
        "within_10pct": None,
        "base_ms_at_search": search.base_latency_ms,
        "drift_pct": None,
        "diff_pct_drift_corrected": None,
        "within_10pct_drift_corrected": None,
        "note": "",
    }
    if search.latency_ms is None:
        section["note"] = "the policy carries no search-time latency (metadata.metrics.latency_ms)"
        return section
    section["diff_pct"] = 100.0 * (res.ms - search.latency_ms) / search.latency_ms
    if search.base_latency_ms:
        drift = res_base.ms / search.base_latency_ms
        section["drift_pct"] = 100.0 * (drift - 1.0)
        section["diff_pct_drift_corrected"] = 100.0 * (res.ms / drift - search.latency_ms) / search.latency_ms
    # a figure timed beside the base (``<model>~anchored``) is that model's, scaled to the base at search start
    same_model = search.latency_model in (res.model_name, f"{res.model_name}~anchored")
    if not comparable:
        section["note"] = "policy adapted with --by-ratio: the search figure is another model's; not judged"
    elif res.kind == "measured" and search.latency_kind == "measured" and same_model:
        section["within_10pct"] = abs(section["diff_pct"]) <= TOLERANCE_PCT
        if section["diff_pct_drift_corrected"] is not None:
            section["within_10pct_drift_corrected"] = abs(section["diff_pct_drift_corrected"]) <= TOLERANCE_PCT
        if search.batch_size is not None and search.batch_size != bs:
            section["note"] = f"the search measured at batch {search.batch_size}, this at {bs}"
    elif search.latency_kind == "predicted":
        section["note"] = f"the search figure was predicted by {search.latency_model!r}; reported, not judged"
    else:
        section["note"] = (
            f"different latency models (search {search.latency_model!r}, here {res.model_name!r}); not judged"
        )
    return section
