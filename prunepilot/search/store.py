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

A search that fails calls :meth:`RunStore.abandon`: with nothing evaluated it removes what it
wrote (so the same folder can be used again), otherwise ``run.json`` says ``failed`` and every
record stays. The folder itself is made on the first write, so reading a mistyped path leaves
nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from prunepilot.errors import ConfigError

#: What a search writes into its folder besides records: removed by :meth:`RunStore.abandon`
#: when nothing was evaluated (and only if the folder did not hold them already).
SEARCH_ARTEFACTS = ("config.yaml", "run.json", "run.json.tmp", "front.json", "tune")


class RunStore:
    """Append-only candidate store of one run folder (driver side)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.candidates_path = self.dir / "candidates.jsonl"
        #: Whether the folder was missing when this store was opened, and what it held then.
        self.created = not self.dir.exists()
        self._found = set() if self.created else {p.name for p in self.dir.iterdir()}
        self._ids = {rec["id"] for rec in self.read()}

    def _writable(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir

    # --- files ---------------------------------------------------------------------------
    @property
    def tune_dir(self) -> Path:
        """Ray Tune's experiment folder inside the run."""
        return self.dir / "tune"

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write the resolved config (``config.yaml``)."""
        (self._writable() / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        """The run's resolved config; raises :class:`ConfigError` when the folder is not a run."""
        path = self.dir / "config.yaml"
        if not path.is_file():
            raise ConfigError(f"{str(self.dir)!r} is not a prunepilot run folder (no config.yaml)")
        return dict(yaml.safe_load(path.read_text()))

    def write_info(self, info: Mapping[str, Any]) -> None:
        """Write (replace) ``run.json``."""
        tmp = self._writable() / "run.json.tmp"
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
        self._writable()
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
        self._writable()
        with open(self.baseline_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(record), default=str) + "\n")

    def baseline(self) -> list[dict[str, Any]]:
        """The uniform-baseline records (empty when none were evaluated)."""
        if not self.baseline_path.is_file():
            return []
        return [json.loads(line) for line in self.baseline_path.read_text().splitlines() if line.strip()]

    def holds_records(self) -> bool:
        """Whether any candidate, failed-trial or baseline record is stored (by anyone)."""
        return bool(self.read()) or bool(self.baseline())

    def abandon(self, error: str) -> list[str]:
        """After a failed search: clean up or mark the run failed; returns the names removed.

        With no record stored, the search artefacts this store's run wrote (never what the folder
        held when it was opened) are removed, and the folder too if this run made it and it is
        now empty: the same folder can start a new search. Records are always kept; then
        ``run.json``, if there is one, gets ``status: failed`` and the error.
        """
        removed: list[str] = []
        if not self.holds_records():
            for name in SEARCH_ARTEFACTS:
                path = self.dir / name
                if name in self._found or not (path.exists() or path.is_symlink()):
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(name)
            if self.created and self.dir.is_dir() and not any(self.dir.iterdir()):
                self.dir.rmdir()
        info = self.read_info()
        if info:
            self.write_info({**info, "status": "failed", "error": error[-2000:], "failed_at": time.time()})
        return removed

    def ok(self) -> list[dict[str, Any]]:
        """Stored candidates that evaluated successfully."""
        return [r for r in self.read() if r.get("status") == "ok"]

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, rid: object) -> bool:
        return rid in self._ids
