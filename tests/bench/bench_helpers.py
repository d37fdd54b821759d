"""Helpers for the bench tests (a module with a unique name: test folders have no __init__)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def load(name: str) -> ModuleType:
    """``bench/<name>.py``, imported from its path (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(cache: Path, **sections: Any) -> dict[str, Any]:
    """A seconds-fast search config for bench tests: a tiny convnet on digits, MACs latency;
    ``sections`` replace whole top-level sections."""
    return {
        "name": "tiny",
        "seed": 0,
        "model": {"spec": "testing:tiny-convnet", "train": {"epochs": 1, "lr": 0.05}, "cache_dir": str(cache)},
        "data": {"name": "digits", "batch_size": 64, "val_size": 0.2, "calib_size": 128},
        "device": {"name": "local-cpu", "latency_model": "macs", "settings": {"ms_per_unit": 1.0}},
        "budget": {"fraction": 0.6},
        "evaluation": {"lower_bound": 0.25, "bn_batches": 2, "uniform_at_budget": False},  # the strategy's own
        "strategy": {"name": "random", "evaluations": 3},
        **sections,
    }
