"""The results store: a run folder the driver appends every candidate to as it arrives.

Layout of a run folder::

    config.yaml        the resolved search config (what --resume reads)
    run.json           base model metrics, budget, latency fit, versions, status
    candidates.jsonl   one JSON line per evaluated candidate (or failed trial), in arrival order
    front.json         the Pareto front (written by the runner and by `prunepilot pareto`)
    tune/              Ray Tune's experiment folder (trial state, searcher state)

Only the driver writes here: on a Ray cluster, trials send candidates through
``tune.report`` and a driver-side callback appends them, so no worker needs this disk.
Lines are flushed and fsynced one by one, so a crash loses nothing already evaluated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from prunepilot.errors import ConfigError


class RunStore:
    """Append-only candidate store of one run folder (driver side)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.candidates_path = self.dir / "candidates.jsonl"
        self._ids = {rec["id"] for rec in self.read()}

    # --- files ---------------------------------------------------------------------------
    @property
    def tune_dir(self) -> Path:
        """Ray Tune's experiment folder inside the run."""
        return self.dir / "tune"

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write the resolved config (``config.yaml``)."""
        (self.dir / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        """The run's resolved config; raises :class:`ConfigError` when the folder is not a run."""
        path = self.dir / "config.yaml"
        if not path.is_file():
            raise ConfigError(f"{str(self.dir)!r} is not a prunepilot run folder (no config.yaml)")
        return dict(yaml.safe_load(path.read_text()))

    def write_info(self, info: Mapping[str, Any]) -> None:
        """Write (replace) ``run.json``."""
        tmp = self.dir / "run.json.tmp"
        tmp.write_text(json.dumps(dict(info), indent=2, default=str) + "\n")
        tmp.replace(self.dir / "run.json")

    def read_info(self) -> dict[str, Any]:
        """``run.json`` (empty dict when absent)."""
        path = self.dir / "run.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    # --- candidates ----------------------------------------------------------------------
    def append(self, record: Mapping[str, Any]) -> bool:
        """Append one candidate; returns False (and writes nothing) if its id is stored already."""
        rid = str(record["id"])
        if rid in self._ids:
            return False
        line = json.dumps(dict(record), default=str)
        with open(self.candidates_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._ids.add(rid)
        return True

    def read(self) -> list[dict[str, Any]]:
        """All stored records (a torn last line from a crash is skipped)."""
        return list(self._iter())

    def _iter(self) -> Iterator[dict[str, Any]]:
        if not self.candidates_path.is_file():
            return
        with open(self.candidates_path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    @property
    def baseline_path(self) -> Path:
        """Uniform-pruning baseline records (not candidates of the search)."""
        return self.dir / "baseline.jsonl"

    def append_baseline(self, record: Mapping[str, Any]) -> None:
        """Append one uniform-baseline record."""
        with open(self.baseline_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(record), default=str) + "\n")

    def baseline(self) -> list[dict[str, Any]]:
        """The uniform-baseline records (empty when none were evaluated)."""
        if not self.baseline_path.is_file():
            return []
        return [json.loads(line) for line in self.baseline_path.read_text().splitlines() if line.strip()]

    def ok(self) -> list[dict[str, Any]]:
        """Stored candidates that evaluated successfully."""
        return [r for r in self.read() if r.get("status") == "ok"]

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, rid: object) -> bool:
        return rid in self._ids
