"""Front plots (prunepilot.search.plots): PNG and self-contained HTML."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import pytest

from prunepilot.search.pareto import pareto_front
from prunepilot.search.plots import (
    hover_text,
    latency_axis_label,
    plot_front_html,
    plot_front_png,
    plot_fronts_png,
    uniform_curve,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cand(
    i: int,
    acc: float,
    lat: float,
    strategy: str = "random",
    kind: str = "predicted",
    status: str = "ok",
    **extra: Any,
) -> dict[str, Any]:
    keep = max(1, int(16 * lat / 10))
    c: dict[str, Any] = {
        "id": f"{strategy}-{i}",
        "strategy": strategy,
        "trial": f"trial_{i % 3}",
        "seed": i,
        "status": status,
        "policy": {
            "format": "prunepilot.policy/v1",
            "channels": {"conv1": keep, "layer1.0.conv1": 8, "layer2.0<odd>": 4},
            "group_channels": {"conv1": 16, "layer1.0.conv1": 16, "layer2.0<odd>": 32},
            "keep_ratios": {"conv1": keep / 16, "layer1.0.conv1": 0.5, "layer2.0<odd>": 0.125},
        },
        "metrics": {
            "accuracy": acc,
            "latency_ms": lat,
            "latency_kind": kind,
            "latency_model": "roofline",
            "macs": int(1e6 * lat),
            "params": 5000 + i,
        },
    }
    c.update(extra)
    return c


@pytest.fixture()
def run() -> list[dict[str, Any]]:
    cands = [cand(i, 0.5 + 0.04 * i - 0.01 * (i % 3) ** 2, 1.0 + 0.8 * i) for i in range(10)]
    cands += [cand(i, 0.45 + 0.04 * i, 1.2 + 0.8 * i, strategy="optuna-tpe") for i in range(8)]
    cands += [cand(i, 0.4 + 0.05 * i, 1.0 + i, strategy="uniform", uniform_ratio=0.1 * (i + 1)) for i in range(9)]
    cands.append(cand(99, 0.0, 0.1, status="failed"))
    cands[3]["metrics"]["measured_latency_ms"] = 3.9
    return cands


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width > 100 and height > 100


def test_front_png(tmp_path: Path, run: list[dict[str, Any]]) -> None:
    front = pareto_front(run)
    out = plot_front_png(run, front, tmp_path / "sub" / "pareto.png", base={"accuracy": 0.9, "latency_ms": 10.0})
    assert out == tmp_path / "sub" / "pareto.png"
    assert_png(out)
    # degenerate inputs still draw
    assert_png(plot_front_png([], [], tmp_path / "empty.png"))
    assert_png(plot_front_png(run, front, tmp_path / "no_uniform.png", uniform=[]))


def test_front_html_is_self_contained_and_hovers_policy(tmp_path: Path, run: list[dict[str, Any]]) -> None:
    front = pareto_front(run)
    out = plot_front_html(run, front, tmp_path / "pareto.html", base={"accuracy": 0.9, "latency_ms": 10.0})
    raw = out.read_text(encoding="utf-8")
    assert len(raw) > 100_000  # plotly.js is inlined
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", raw, re.IGNORECASE)
    # plotly's JSON escapes '<', '>' and '/' inside the figure data
    text = raw.replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u002f", "/")
    # hover text of a front policy: its id, metrics and per-group channels
    assert hover_text(front[0]) in text
    assert "layer1.0.conv1 8/16" in text
    assert "layer2.0&lt;odd&gt; 4/32" in text  # group names are escaped for plotly's pseudo-HTML
    assert "latency: 1 ms predicted" in text
    assert "base model" in text and "uniform pruning" in text


def test_hover_text(run: list[dict[str, Any]]) -> None:
    text = hover_text(run[3])
    assert "random-3" in text and "strategy random" in text
    assert "accuracy: 0.6200" in text
    assert "3.4 ms predicted (measured 3.9 ms)" in text
    assert "MACs: 3.4M" in text
    assert "conv1 5/16" in text and "mean keep ratio" in text


def test_latency_axis_label(run: list[dict[str, Any]]) -> None:
    assert latency_axis_label(run) == "latency (ms, predicted)"
    assert latency_axis_label([cand(0, 0.5, 1.0, kind="measured")]) == "latency (ms, measured)"
    mixed = latency_axis_label([cand(0, 0.5, 1.0, kind="measured"), cand(1, 0.5, 1.0)])
    assert "mixed" in mixed and mixed.startswith("latency (ms")
    assert latency_axis_label([]) == "latency (ms)"


def test_uniform_curve(run: list[dict[str, Any]]) -> None:
    curve = uniform_curve(run)
    assert [c["uniform_ratio"] for c in curve] == sorted(c["uniform_ratio"] for c in curve)
    assert len(curve) == 9 and all(c["strategy"] == "uniform" for c in curve)
    assert uniform_curve(run, []) == []


def test_fronts_png(tmp_path: Path, run: list[dict[str, Any]]) -> None:
    runs = {
        "random": [c for c in run if c["strategy"] == "random"],
        "optuna-tpe": [c for c in run if c["strategy"] == "optuna-tpe"],
        "empty": [cand(0, 0.1, 1.0, status="failed")],
    }
    assert_png(plot_fronts_png(runs, tmp_path / "bench.png", base={"accuracy": 0.9, "latency_ms": 10.0}))
    assert_png(plot_fronts_png({}, tmp_path / "nothing.png"))
    only_failed = {"x": [cand(0, 0.1, 1.0, status="failed")]}
    assert_png(plot_fronts_png(only_failed, tmp_path / "failed.png", base={"accuracy": 0.9, "latency_ms": 10.0}))
