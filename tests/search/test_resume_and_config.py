"""A killed search resumes without losing or re-evaluating candidates; bad configs fail early."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import yaml
from search_helpers import tiny_config

from prunepilot.errors import ConfigError, PrunepilotError
from prunepilot.search.config import load_config, validate_config
from prunepilot.search.runner import run_search
from prunepilot.search.store import RunStore


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path) -> None:
    # 40 evaluations: a tiny candidate takes milliseconds, and on a quiet machine 10 were all stored before the
    # driver's store had shown 3 (the kill then landed after the search)
    total = 40
    cfg = tiny_config(tmp_path, **{"strategy.evaluations": total, "ray.max_concurrent": 1})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "prunepilot", "search", str(path), "--run-dir", str(run), "--quiet"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    store_file = run / "candidates.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if store_file.is_file() and len(store_file.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    before = RunStore(run).ok()
    assert 3 <= len(before) < total, "the kill must land mid-search"
    result = run_search(validate_config(RunStore(run).read_config()), run, resume=True, progress=False)
    after = RunStore(run).ok()
    ids_after = [r.id for r in after]
    assert len(ids_after) == len(set(ids_after))  # nothing stored twice
    assert {r.id for r in before} <= set(ids_after)  # nothing lost
    assert len(after) == total == len(result.candidates)
    # nothing evaluated twice: a policy appears once among fresh (non-cached) evaluations
    fresh = [r.policy.key() for r in after if not r.cached]
    assert len(fresh) == len(set(fresh))


def _write(tmp_path: Path, **changes) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(tiny_config(tmp_path, **changes)))
    return p


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"strategy.name": "annealing"}, "unknown strategy 'annealing'"),
        ({"device.name": "toaster"}, "unknown device 'toaster'"),
        ({"budget": {"ms": -3}}, "budget.ms"),
        ({"budget": {"fraction": 1.5}}, "budget.fraction"),
        ({"data.name": "fashion-mnist", "data.root": "/nonexistent/data"}, "/nonexistent/data"),
        ({"strategy.evaluations": "many"}, "strategy.evaluations"),
        ({"strategy.settings": {"projection": True}}, "accepted settings: project"),
        ({"evaluation.unknown_field": 1}, "evaluation.unknown_field"),
        ({"evaluation.importanc": "l2"}, "did you mean 'importance'?); accepted fields of evaluation: importance"),
        ({"evaluation.importance": "l7"}, "unknown importance criterion 'l7'"),
        ({"budget": {"ms": float("inf")}}, "field 'budget.ms': Input should be a finite number"),
        ({"device.latency_model": "rooflin"}, "unknown latency model 'rooflin'"),
    ],
)
def test_bad_config_fails_before_ray(tmp_path, changes, needle) -> None:
    with pytest.raises(PrunepilotError) as err:
        cfg = load_config(_write(tmp_path, **changes))
        run_search(cfg, tmp_path / "run", progress=False)
    assert needle in str(err.value)
    assert not ray.is_initialized()


def test_unreachable_budget_is_refused_with_the_minimum(tmp_path) -> None:
    cfg = load_config(_write(tmp_path, budget={"ms": 0.001}))
    with pytest.raises(ConfigError, match="reachable minimum of"):
        run_search(cfg, tmp_path / "run", progress=False)
    assert not ray.is_initialized()
    assert not (tmp_path / "run").exists()  # nothing evaluated: nothing left to block the next try


def test_cli_overrides(tmp_path) -> None:
    from prunepilot.search.config import budget_override

    cfg = load_config(_write(tmp_path), {"strategy.name": "uniform", "seed": 7, **budget_override("12.5ms")})
    assert cfg.strategy.name == "uniform" and cfg.seed == 7 and cfg.budget.ms == 12.5 and cfg.budget.fraction is None
    assert load_config(_write(tmp_path), budget_override("30%")).budget.fraction == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="--budget"):
        budget_override("fast")
