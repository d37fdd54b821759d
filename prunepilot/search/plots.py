"""Pictures of a run's Pareto front: ``pareto.png`` (matplotlib) and ``pareto.html`` (plotly).

Both show every ``ok`` candidate in grey, the front highlighted by strategy, the uniform-pruning
curve (the baseline every front is drawn against) and the base model as a star, with accuracy
on the y axis and latency on the x axis. The x label says whether the latencies are measured,
predicted or a mix. The HTML is self-contained (plotly.js inlined, nothing fetched at view time)
and hovering a point shows its metrics and the per-group channel counts of its policy.

Example:
    >>> front = pareto_front(candidates)                          # doctest: +SKIP
    >>> plot_front_png(candidates, front, run / "pareto.png")     # doctest: +SKIP
    >>> plot_front_html(candidates, front, run / "pareto.html")   # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

from prunepilot.search.front_table import format_latency, mean_keep_ratio
from prunepilot.search.pareto import (
    ACCURACY,
    LATENCY,
    base_value,
    default_reference,
    hypervolume,
    pareto_front,
    to_minimisation,
)

__all__ = [
    "FrontLayers",
    "hover_text",
    "latency_axis_label",
    "plot_devices_html",
    "plot_front_html",
    "plot_front_png",
    "plot_fronts_png",
    "uniform_curve",
]

Candidate = Mapping[str, Any]

ACCURACY_LABEL = "accuracy (held-out split of the training data)"
_GREY = "#b0b0b0"
_BASE_COLOR = "#e8a500"


@dataclass(frozen=True)
class FrontLayers:
    """What one device's picture shows (wire-form candidates, as the plot functions take them)."""

    candidates: Sequence[Candidate]
    """Every candidate of the run, drawn in grey (failed ones are skipped)."""
    front: Sequence[Candidate]
    """The front, coloured by strategy."""
    uniform: Sequence[Candidate] | None = None
    """The uniform-pruning curve (None: the candidates of strategy ``uniform``)."""
    base: Any = None
    """The unpruned model (candidate dict, metrics dict or ``Metrics``), drawn as a star."""


def _ok(candidates: Sequence[Candidate]) -> list[Candidate]:
    return [c for c in candidates if c.get("status") == "ok"]


def _xy(candidates: Sequence[Candidate]) -> tuple[list[float], list[float]]:
    return (
        [float(c["metrics"]["latency_ms"]) for c in candidates],
        [float(c["metrics"]["accuracy"]) for c in candidates],
    )


def latency_axis_label(candidates: Sequence[Candidate]) -> str:
    """``"latency (ms, measured)"``, ``"... predicted)"`` or ``"... mixed)"`` from the candidates."""
    kinds = {c.get("metrics", {}).get("latency_kind") for c in _ok(candidates)}
    if not kinds:
        return "latency (ms)"
    if len(kinds) == 1:
        return f"latency (ms, {kinds.pop()})"
    return "latency (ms, mixed: measured and predicted)"


def uniform_curve(candidates: Sequence[Candidate], uniform: Sequence[Candidate] | None = None) -> list[Candidate]:
    """The uniform-pruning baseline: ``uniform`` if given, else the ``ok`` candidates of strategy
    ``"uniform"``; ordered by ``uniform_ratio`` (latency where a ratio is missing)."""
    points = _ok(uniform if uniform is not None else [c for c in candidates if c.get("strategy") == "uniform"])
    return sorted(points, key=lambda c: (float(c.get("uniform_ratio", -1.0)), float(c["metrics"]["latency_ms"])))


def _si(value: Any) -> str:
    if value is None:
        return "?"
    number = float(value)
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= factor:
            return f"{number / factor:.3g}{suffix}"
    return f"{number:.3g}"


def _policy_dict(policy: Any) -> Mapping[str, Any]:
    if isinstance(policy, str):
        policy = json.loads(policy)
    return policy if isinstance(policy, Mapping) else {}


def hover_text(candidate: Candidate, per_line: int = 4) -> str:
    """Plotly hover text: id, strategy, accuracy, latency (+kind, re-measured), MACs, params, and
    the policy's kept/full channels per group (``per_line`` groups a line)."""
    metrics = candidate.get("metrics", {})
    esc = html.escape
    lines = [
        f"<b>{esc(str(candidate.get('id', '?')))}</b>  strategy {esc(str(candidate.get('strategy', '?')))}"
        f", trial {esc(str(candidate.get('trial', '?')))}",
        f"accuracy: {float(metrics['accuracy']):.4f}",
        f"latency: {esc(format_latency(metrics))} [{esc(str(metrics.get('latency_model', '?')))}]",
        f"MACs: {_si(metrics.get('macs'))}   params: {_si(metrics.get('params'))}",
    ]
    policy = _policy_dict(candidate.get("policy"))
    keep = mean_keep_ratio(policy)
    if keep is not None:
        lines.append(f"mean keep ratio: {keep:.3f}")
    channels, full = policy.get("channels") or {}, policy.get("group_channels") or {}
    if channels:
        lines.append("channels kept/full per group:")
        items = [f"{esc(str(g))} {w}/{full.get(g, '?')}" for g, w in channels.items()]
        lines += ["  " + ", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return "<br>".join(lines)


def _base_point(base: Any) -> tuple[float, float] | None:
    if base is None:
        return None
    latency, accuracy = base_value(base, LATENCY), base_value(base, ACCURACY)
    return None if latency is None or accuracy is None else (latency, accuracy)


def _strategy_colors(strategies: Sequence[str]) -> dict[str, str]:
    palette = "#1f77b4 #d62728 #2ca02c #9467bd #ff7f0e #17becf #8c564b #e377c2 #bcbd22 #7f7f7f".split()
    return {s: palette[i % len(palette)] for i, s in enumerate(sorted(set(strategies)))}


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # Agg canvas, no pyplot state: safe in workers and threads
    fig.savefig(out, dpi=150)
    return out


def _finish(ax: Axes, title: str) -> None:
    ax.set_title(title)
    ax.set_ylabel(ACCURACY_LABEL)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8, framealpha=0.9)


def _draw_base(ax: Axes, base: Any) -> None:
    point = _base_point(base)
    if point is not None:
        ax.scatter(
            [point[0]],
            [point[1]],
            marker="*",
            s=260,
            color=_BASE_COLOR,
            edgecolors="black",
            zorder=6,
            label="base model",
        )


def plot_front_png(
    candidates: Sequence[Candidate],
    front: Sequence[Candidate],
    path: str | Path,
    uniform: Sequence[Candidate] | None = None,
    base: Any = None,
    title: str = "Pareto front: accuracy vs latency",
) -> Path:
    """Write the front as a PNG (matplotlib, Agg) and return its path.

    Args:
        candidates: every candidate of the run (failed ones are skipped), drawn in grey.
        front: the front (:func:`~prunepilot.search.pareto.pareto_front`), coloured by strategy and
            joined by its attainment staircase; re-measured latencies are drawn as open markers.
        path: where to write the PNG (parent folders are created).
        uniform: the uniform-pruning curve; default: the ``ok`` candidates of strategy ``uniform``
            (pass ``[]`` to leave it out).
        base: the unpruned model (candidate dict, metrics dict or ``Metrics``), drawn as a star.
        title: figure title.
    """
    fig = Figure(figsize=(8, 5.2), layout="constrained")
    ax = fig.add_subplot()
    ok = _ok(candidates)
    xs, ys = _xy(ok)
    ax.scatter(xs, ys, s=14, color=_GREY, alpha=0.8, linewidths=0, label=f"all candidates ({len(ok)})")
    curve = uniform_curve(candidates, uniform)
    if curve:
        ux, uy = _xy(curve)
        ax.plot(ux, uy, "--", marker="x", color="black", lw=1.2, ms=5, label="uniform pruning", zorder=3)
    if front:
        fx, fy = _xy(front)
        ax.plot(fx, fy, drawstyle="steps-post", color="#444444", lw=1.0, zorder=4)
        colors = _strategy_colors([str(c.get("strategy")) for c in front])
        for strategy, color in colors.items():
            mine = [c for c in front if str(c.get("strategy")) == strategy]
            sx, sy = _xy(mine)
            ax.scatter(sx, sy, s=46, color=color, edgecolors="black", linewidths=0.6, zorder=5, label=strategy)
        remeasured = [
            c
            for c in front
            if c["metrics"].get("measured_latency_ms") is not None and c["metrics"].get("latency_kind") != "measured"
        ]
        for i, cand in enumerate(remeasured):
            m = cand["metrics"]
            x0, x1, y = float(m["latency_ms"]), float(m["measured_latency_ms"]), float(m["accuracy"])
            ax.plot([x0, x1], [y, y], ":", color="#555555", lw=0.9, zorder=4)
            ax.scatter(
                [x1],
                [y],
                s=46,
                facecolors="none",
                edgecolors="black",
                zorder=5,
                label="re-measured on device" if i == 0 else None,
            )
    _draw_base(ax, base)
    ax.set_xlabel(latency_axis_label(list(candidates) + list(front)))
    _finish(ax, title)
    return _save(fig, path)


def plot_fronts_png(
    runs: Mapping[str, Sequence[Candidate]],
    path: str | Path,
    base: Any = None,
    title: str = "Pareto fronts",
) -> Path:
    """Several runs' accuracy/latency fronts on one figure (benchmark comparisons).

    Each run's candidates are drawn faintly in its colour and its front as a staircase; the
    legend gives each front's hypervolume against one shared reference
    (:func:`~prunepilot.search.pareto.default_reference` over all runs, anchored on ``base`` when
    given), so the numbers are comparable.
    """
    fig = Figure(figsize=(8, 5.2), layout="constrained")
    ax = fig.add_subplot()
    everything = [c for cands in runs.values() for c in cands]
    fronts = {label: pareto_front(cands) for label, cands in runs.items()}
    try:
        reference: NDArray[np.float64] | None = default_reference(everything, base=base)
    except ValueError:  # no ok candidate and no base latency: no common reference, no HV
        reference = None
    colors = _strategy_colors(list(runs))
    for label, cands in runs.items():
        color, front = colors[label], fronts[label]
        xs, ys = _xy(_ok(cands))
        ax.scatter(xs, ys, s=10, color=color, alpha=0.18, linewidths=0)
        if not front:
            ax.plot([], [], color=color, label=f"{label} (no ok candidates)")
            continue
        hv = hypervolume(to_minimisation(front), reference) if reference is not None else float("nan")
        fx, fy = _xy(front)
        ax.plot(
            fx,
            fy,
            drawstyle="steps-post",
            marker="o",
            ms=4,
            color=color,
            lw=1.4,
            label=f"{label}: {len(front)} on front, HV {hv:.4g}",
        )
    _draw_base(ax, base)
    ax.set_xlabel(latency_axis_label(everything))
    _finish(ax, title)
    return _save(fig, path)


def plot_front_html(
    candidates: Sequence[Candidate],
    front: Sequence[Candidate],
    path: str | Path,
    uniform: Sequence[Candidate] | None = None,
    base: Any = None,
    title: str = "Pareto front: accuracy vs latency",
) -> Path:
    """Write an interactive, self-contained HTML plot of the front and return its path.

    Same layers and arguments as :func:`plot_front_png`. plotly.js is inlined
    (``include_plotlyjs=True``), so the file opens offline. Hovering any point shows its
    accuracy, latency with its kind (and re-measured figure), MACs, params, strategy and the
    policy's channels per group. Several devices' fronts in one file: :func:`plot_devices_html`.
    """
    return plot_devices_html({"": FrontLayers(candidates, front, uniform, base)}, path, title)


def _html_traces(layers: FrontLayers) -> list[Any]:
    """The plotly traces of one device: candidates, uniform curve, front (line, then by strategy), base."""
    import plotly.graph_objects as go

    traces: list[Any] = []

    def scatter(points: Sequence[Candidate], name: str, **kwargs: Any) -> None:
        xs, ys = _xy(points)
        hover = [hover_text(c) for c in points]
        traces.append(go.Scatter(x=xs, y=ys, name=name, hovertext=hover, hoverinfo="text", **kwargs))

    ok, front = _ok(layers.candidates), layers.front
    scatter(ok, f"all candidates ({len(ok)})", mode="markers", marker={"color": _GREY, "size": 6})
    curve = uniform_curve(layers.candidates, layers.uniform)
    if curve:
        scatter(
            curve,
            "uniform pruning",
            mode="lines+markers",
            line={"color": "black", "dash": "dash", "width": 1.5},
            marker={"symbol": "x", "size": 7, "color": "black"},
        )
    if front:
        fx, fy = _xy(front)
        line = {"shape": "hv", "color": "#444444", "width": 1}
        traces.append(go.Scatter(x=fx, y=fy, mode="lines", line=line, name="front", hoverinfo="skip"))
        for strategy, color in _strategy_colors([str(c.get("strategy")) for c in front]).items():
            mine = [c for c in front if str(c.get("strategy")) == strategy]
            marker = {"color": color, "size": 10, "line": {"color": "black", "width": 1}}
            scatter(mine, f"front: {strategy}", mode="markers", marker=marker)
    point = _base_point(layers.base)
    if point is not None:
        star = {"symbol": "star", "size": 18, "color": _BASE_COLOR, "line": {"color": "black", "width": 1}}
        hover = [f"<b>base model</b><br>accuracy: {point[1]:.4f}<br>latency: {point[0]:.3g} ms"]
        base = go.Scatter(x=[point[0]], y=[point[1]], mode="markers", name="base model", marker=star, hovertext=hover)
        traces.append(base.update(hoverinfo="text"))
    return traces


def plot_devices_html(
    layers: Mapping[str, FrontLayers], path: str | Path, title: str = "Pareto front: accuracy vs latency"
) -> Path:
    """:func:`plot_front_html` for several devices of one run: ``layers`` by device name, the first
    shown; with more than one, a menu switches the traces, the latency axis label and the title
    between the devices (each trace set is in the file; nothing is recomputed at view time)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    spans: list[tuple[str, int, int, str]] = []  # device, first trace, end, x label
    for name, device in layers.items():
        start = len(fig.data)
        fig.add_traces(_html_traces(device))
        spans.append((name, start, len(fig.data), latency_axis_label(list(device.candidates) + list(device.front))))

    def titled(name: str) -> str:
        return f"{title}, on {name}" if len(spans) > 1 else title

    for trace in fig.data[spans[0][2] :]:
        trace.visible = False
    buttons = [
        {
            "label": name,
            "method": "update",
            "args": [
                {"visible": [start <= i < end for i in range(len(fig.data))]},
                {"title.text": titled(name), "xaxis.title.text": label},
            ],
        }
        for name, start, end, label in spans
    ]
    fig.update_layout(
        title=titled(spans[0][0]),
        xaxis_title=spans[0][3],
        yaxis_title=ACCURACY_LABEL,
        template="plotly_white",
        hovermode="closest",
        hoverlabel={"align": "left"},
        updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.15, "xanchor": "right"}] if len(spans) > 1 else [],
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(out, include_plotlyjs=True, full_html=True, config={"displaylogo": False})
    return out
