"""Helpers for search tests (a module with a unique name: test folders have no __init__)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_config(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """A seconds-long search: tiny-convnet on digits, MACs as predicted latency."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "model": {
            "spec": "testing:tiny-convnet",
            "train": {"epochs": 2, "lr": 0.05, "seed": 0},
            "cache_dir": str(tmp_path / "cache"),
        },
        "data": {"name": "digits", "batch_size": 64, "val_size": 0.2, "calib_size": 128},
        "device": {"name": "local-cpu", "latency_model": "macs", "settings": {"ms_per_unit": 1.0}, "batch_size": 1},
        "budget": {"fraction": 0.6},
        # budget fill and the uniform candidate off: these searches store exactly what their strategy proposes
        # (tests/search/test_fill.py)
        "evaluation": {"lower_bound": 0.25, "bn_batches": 2, "fill_below": 0.0, "uniform_at_budget": False},
        "strategy": {"name": "random", "evaluations": 6},
        "ray": {"num_cpus": 2, "max_concurrent": 2, "cpus_per_trial": 1},
    }
    for dotted, value in changes.items():
        node = cfg
        parts = dotted.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg
