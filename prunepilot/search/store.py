"""The run store: the one owner of a run folder. Nothing else reads or writes one.

Layout of a run folder::

    config.yaml        the resolved search config (what --resume reads)
    run.json           base model metrics, budget, latency fit, versions, backend, status
    candidates.jsonl   one JSON line per evaluated candidate (or failed trial), in arrival order
    baseline.jsonl     the uniform-pruning curve the driver evaluates after the search
    remeasured.json    front candidates' latency re-measured on the device, by candidate id
    remeasured-devices.json   the same for the other devices (``device.also``), by device, then id
    front.json         the Pareto front (re-measured figures included)
    front-NAME.json    the front on another device NAME (`prunepilot pareto RUN --device NAME`)
    pareto.png/.html   pictures of the front (`prunepilot pareto`; pareto-NAME.png on device NAME,
                       the HTML switches between the devices)
    tune/              Ray Tune's experiment folder (Ray backend only)

Records are typed (:mod:`prunepilot.search.records`); JSON is their wire format, as it always
was, so folders written by earlier versions load. Re-measured figures are kept apart from the
append-only candidates and merged into every candidate read (:meth:`RunStore.ok`), so a front
recomputed later (``prunepilot pareto``) keeps them; a folder from before ``remeasured.json``
existed gives them from its ``front.json``.

Only the driver writes here: on a Ray cluster, trials send candidates through ``tune.report``
and a driver-side callback appends them, so no worker needs this disk. Lines are flushed and
fsynced one by one, so a crash loses nothing already evaluated.

A search that fails calls :meth:`RunStore.abandon`: with nothing evaluated it removes what it
wrote (so the same folder can be used again), otherwise ``run.json`` says ``failed`` and every
record stays. The folder itself is made on the first write, so reading a mistyped path leaves
nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from prunepilot.errors import ConfigError
from prunepilot.search.records import Candidate, FailedTrial, Measurement, Metrics, Record, record_from_json

if TYPE_CHECKING:
    from prunepilot.search.plots import FrontLayers

log = logging.getLogger(__name__)

#: What a search writes into its folder besides records: removed by :meth:`RunStore.abandon`
#: when nothing was evaluated (and only if the folder did not hold them already).
SEARCH_ARTEFACTS = (
    "config.yaml", "run.json", "run.json.tmp", "front.json", "remeasured.json", "remeasured-devices.json", "tune"
)  # fmt: skip


def device_slug(device: str) -> str:
    """``device`` as a file-name part (``front-<slug>.json``): anything but ``[A-Za-z0-9_.-]`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", device)


class RunStore:
    """Config, run info, candidates, baseline, re-measurements, front, plots and exports of one run."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.candidates_path = self.dir / "candidates.jsonl"
        #: Whether the folder was missing when this store was opened, and what it held then.
        self.created = not self.dir.exists()
        self._found = set() if self.created else {p.name for p in self.dir.iterdir()}
        self._ids: set[str] | None = None  # read on the first append

    def _writable(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir

    def _write_json(self, name: str, data: Any) -> Path:
        """Replace ``name`` atomically (write a temporary file, then rename it)."""
        tmp = self._writable() / f"{name}.tmp"
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        tmp.replace(self.dir / name)
        return self.dir / name

    # --- config and run info -------------------------------------------------------------
    @property
    def tune_dir(self) -> Path:
        """Ray Tune's experiment folder inside the run."""
        return self.dir / "tune"

    @property
    def config_path(self) -> Path:
        """The run's ``config.yaml`` (for messages naming where a setting came from)."""
        return self.dir / "config.yaml"

    @property
    def is_run(self) -> bool:
        """Whether the folder holds a search (its ``config.yaml``)."""
        return self.config_path.is_file()

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write the resolved config (``config.yaml``)."""
        self._writable()
        self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        """The run's resolved config; raises :class:`ConfigError` when the folder is not a run."""
        path = self.config_path
        if not path.is_file():
            raise ConfigError(f"{str(self.dir)!r} is not a prunepilot run folder (no config.yaml); give a run folder")
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path} is unreadable ({exc}); it is not a config a search wrote") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} holds {type(data).__name__}, not a search config")
        return data

    def write_info(self, info: Mapping[str, Any]) -> None:
        """Write (replace) ``run.json``."""
        self._write_json("run.json", dict(info))

    def read_info(self) -> dict[str, Any]:
        """``run.json`` (empty dict when absent or unreadable, e.g. a half-copied folder)."""
        path = self.dir / "run.json"
        try:
            data = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("%s is unreadable (%s); taken as empty", path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def base_metrics(self) -> Metrics | None:
        """The base (unpruned) model's search-time metrics, from ``run.json``."""
        base = self.read_info().get("base")
        try:
            return Metrics.from_json(base) if isinstance(base, dict) else None
        except TypeError:  # a run.json written by hand with only some figures
            return None

    def base_latency_ms(self, device: str | None = None) -> float | None:
        """The base model's search-time latency (None when the run recorded none), on ``device`` of
        ``device.also`` when given (its measured figure on a measured device)."""
        info = self.read_info()
        base = self.devices().get(device) if device is not None else info.get("base")
        key = "base_latency_ms" if device is not None else "latency_ms"
        ms = base.get(key) if isinstance(base, dict) else None
        return float(ms) if ms is not None else None

    def devices(self) -> dict[str, dict[str, Any]]:
        """``run.json``'s record of each device of ``device.also`` (base latency, budget, in-loop
        predictor, best candidate within its budget), by name; empty for runs without them."""
        found = self.read_info().get("devices")
        return {str(k): dict(v) for k, v in found.items() if isinstance(v, dict)} if isinstance(found, dict) else {}

    def budget_ms(self) -> float | None:
        """The search's latency budget in ms (None before the driver resolved it)."""
        ms = self.read_info().get("budget_ms")
        return float(ms) if ms is not None else None

    def base_checkpoint(self) -> Path | None:
        """Where the base model's weights are: the checkpoint the search trained or was given."""
        ckpt = self.read_info().get("base_checkpoint")
        if not ckpt and self.is_run:
            model = self.read_config().get("model")
            ckpt = model.get("checkpoint") if isinstance(model, dict) else None
        return Path(str(ckpt)) if ckpt else None

    # --- candidates ----------------------------------------------------------------------
    def append(self, record: Record) -> bool:
        """Append one record; returns False (and writes nothing) if its id is stored already."""
        if self._ids is None:
            self._ids = {rec.id for rec in self.read()}
        if record.id in self._ids:
            return False
        line = json.dumps(record.to_json(), default=str)
        self._writable()
        with open(self.candidates_path, "a", encoding="utf-8") as fh:
            if fh.tell() > 0 and not _ends_with_newline(self.candidates_path):
                fh.write("\n")  # a line torn by a crash stays alone on its line
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._ids.add(record.id)
        return True

    def read(self) -> list[Record]:
        """All stored records, as written (a torn last line from a crash is skipped)."""
        return list(self._iter(self.candidates_path))

    def _iter(self, path: Path) -> Iterator[Record]:
        if not path.is_file():
            return
        with open(path, encoding="utf-8") as fh:
            lines = [line.strip() for line in fh]
        lines = [line for line in lines if line]
        for n, line in enumerate(lines, start=1):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                if n < len(lines):  # the last line is torn by a crash mid-write; others should not be
                    log.warning("%s: line %d is not JSON; skipped", path, n)
                continue
            try:
                yield record_from_json(data)
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(
                    f"{path}: line {n} (id {data.get('id')!r}) is not a candidate record ({type(exc).__name__}: "
                    f"{exc}); was the file written by prunepilot?"
                ) from None

    def ok(self) -> list[Candidate]:
        """Candidates that evaluated successfully, in arrival order, re-measured figures merged in
        (those of other devices too, :attr:`Candidate.measured_on`)."""
        measured, on = self.measurements(), self.device_measurements()
        return [
            r.with_measurement(measured.get(r.id, r.measured)).with_measured_on(
                {d: by_id[r.id] for d, by_id in on.items() if r.id in by_id}
            )
            for r in self.read()
            if isinstance(r, Candidate)
        ]

    def failed(self) -> list[FailedTrial]:
        """Records of failed trials."""
        return [r for r in self.read() if isinstance(r, FailedTrial)]

    @property
    def baseline_path(self) -> Path:
        """Uniform-pruning baseline records (not candidates of the search)."""
        return self.dir / "baseline.jsonl"

    def append_baseline(self, candidate: Candidate) -> None:
        """Append one uniform-baseline record."""
        self._writable()
        with open(self.baseline_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(candidate.to_json(), default=str) + "\n")

    def baseline(self) -> list[Candidate]:
        """The uniform-baseline records (empty when none were evaluated)."""
        return [r for r in self._iter(self.baseline_path) if isinstance(r, Candidate)]

    def holds_records(self) -> bool:
        """Whether any candidate, failed-trial or baseline record is stored (by anyone)."""
        return bool(self.read()) or bool(self.baseline())

    # --- re-measurements and the front ---------------------------------------------------
    @property
    def front_path(self) -> Path:
        return self.dir / "front.json"

    def add_measurements(self, measured: Mapping[str, Measurement], device: str | None = None) -> None:
        """Keep re-measured latencies (by candidate id) beside the candidates; later ones win.

        ``device``: measured on that device of ``device.also`` (``remeasured-devices.json``).
        """
        if not measured:
            return
        if device is not None:
            raw = {d: {k: m.to_json() for k, m in by_id.items()} for d, by_id in self.device_measurements().items()}
            raw.setdefault(device, {}).update({k: m.to_json() for k, m in measured.items()})
            self._write_json("remeasured-devices.json", raw)
            return
        stored = {k: m.to_json() for k, m in self._stored_measurements().items()}
        stored.update({k: m.to_json() for k, m in measured.items()})
        self._write_json("remeasured.json", stored)

    def _stored_measurements(self) -> dict[str, Measurement]:
        path = self.dir / "remeasured.json"
        if not path.is_file():
            return {}
        raw = json.loads(path.read_text())
        return {k: m for k, v in raw.items() if (m := Measurement.from_json(v)) is not None}

    def device_measurements(self) -> dict[str, dict[str, Measurement]]:
        """Latencies measured on the devices of ``device.also`` after the search: by device, then id."""
        path = self.dir / "remeasured-devices.json"
        raw = json.loads(path.read_text()) if path.is_file() else {}
        return {
            str(d): {str(k): m for k, v in by_id.items() if (m := Measurement.from_json(v)) is not None}
            for d, by_id in raw.items()
        }

    def measurements(self) -> dict[str, Measurement]:
        """Every re-measured latency of the run, by candidate id.

        From ``remeasured.json`` and, for folders written before it existed, the figures their
        ``front.json`` holds (an unreadable front contributes nothing).
        """
        found: dict[str, Measurement] = {}
        if self.front_path.is_file():
            try:
                raw = json.loads(self.front_path.read_text())
                for rec in raw if isinstance(raw, list) else []:
                    m = Measurement.from_json(rec.get("metrics") or {}) if isinstance(rec, dict) else None
                    if m is not None:
                        found[str(rec["id"])] = m
            except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.warning("%s is unreadable (%s): its re-measured figures are not used", self.front_path, exc)
        found.update(self._stored_measurements())
        return found

    def write_front(self, front: Sequence[Candidate], device: str | None = None) -> Path:
        """Write ``front.json`` (re-measured figures merged in, whatever the caller held).

        Figures an older folder kept only in its ``front.json`` move to ``remeasured.json``
        first, so a front that leaves their candidates out does not lose them. ``device``: the
        front on that device of ``device.also`` (candidates as :func:`~prunepilot.search.devices.on_device`
        gives them), written to ``front-<device>.json`` as given.
        """
        if device is not None:
            return self._write_json(f"front-{device_slug(device)}.json", [c.to_json() for c in front])
        measured = self.measurements()
        stored = self._stored_measurements()
        self.add_measurements({k: m for k, m in measured.items() if k not in stored})
        return self._write_json(
            "front.json", [c.with_measurement(measured.get(c.id, c.measured)).to_json() for c in front]
        )

    def read_front(self) -> list[Candidate]:
        """``front.json`` as written (empty when there is none yet)."""
        if not self.front_path.is_file():
            return []
        return [Candidate.from_json(rec) for rec in json.loads(self.front_path.read_text())]

    # --- plots and exports ---------------------------------------------------------------
    def write_plots(self, layers: Mapping[str, FrontLayers], png: str = "pareto.png") -> tuple[Path, Path]:
        """``png`` (the first device of ``layers``) and ``pareto.html`` (every device of ``layers``,
        by name, the first shown; a menu switches between them when there are several). Each device's
        layers: its front over every candidate, the uniform curve and the base model
        (:func:`prunepilot.search.devices.front_layers`)."""
        from prunepilot.search.plots import plot_devices_html, plot_front_png

        first = next(iter(layers.values()))
        png_path = plot_front_png(
            first.candidates, first.front, self._writable() / png, uniform=first.uniform, base=first.base
        )
        return png_path, plot_devices_html(layers, self.dir / "pareto.html")

    def export_policy(self, candidate: Candidate, path: str | Path) -> Path:
        """Save ``candidate``'s policy to ``path`` with where it came from in its metadata:
        ``run`` (this folder), ``candidate`` (its id) and ``metrics`` (re-measured figures included),
        which ``prunepilot apply`` compares its own measurement against; ``device`` too when the
        figures are another device's (``metrics.device``), which apply then measures on."""
        policy = candidate.policy
        metrics = candidate.to_json()["metrics"]
        meta = {**policy.metadata, "run": str(self.dir), "candidate": candidate.id, "metrics": metrics}
        if candidate.metrics.device is not None:
            meta["device"] = candidate.metrics.device
        return policy.model_copy(update={"metadata": meta}).save(path)

    # --- failure -------------------------------------------------------------------------
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

    def __len__(self) -> int:
        return len(self.read())

    def __contains__(self, rid: object) -> bool:
        return any(r.id == rid for r in self.read())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
