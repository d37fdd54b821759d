"""The records of a search: :class:`Metrics`, :class:`Candidate`, :class:`FailedTrial`, :class:`Measurement`,
:class:`DeviceLatency`.

Every strategy, backend, store, front and plot agrees on these types; JSON is only their wire
format (one line of ``candidates.jsonl``, the ``candidate`` field of a Tune report, an entry of
``front.json``). The wire format is the one run folders have always held, so old folders load::

    {"id": "a1b2c_00003-0000", "status": "ok", "strategy": "random", "trial": "a1b2c_00003",
     "index": 0, "seed": 3, "budget_ms": 2.5, "policy": {...}, "cached": false,
     "metrics": {"accuracy": 0.91, "latency_ms": 2.4, "latency_kind": "predicted", ...,
                 "within_budget": true, "measured_latency_ms": 2.7,    # the last once re-measured
                 "devices": {"rpi4": {"latency_ms": 9.1, "latency_kind": "predicted",  # device.also only
                                      "latency_model": "roofline"}}},
     "node": "host", "node_id": null, "pid": 123, "wall_time": 1.7e9, "versions": {...},
     "projection_scale": 0.8}                                          # strategy fields: `extra`

Example:
    >>> m = Metrics(accuracy=0.9, latency_ms=2.0, latency_kind="predicted", latency_model="macs",
    ...             macs=1000, params=10, eval_seconds=0.1)
    >>> Metrics.from_json({**m.to_dict(), "within_budget": True}) == m
    True
"""

from __future__ import annotations

import dataclasses
import os
import platform
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Literal

import torch

from prunepilot import __version__
from prunepilot.errors import ConfigError
from prunepilot.pruning import TORCH_PRUNING_VERSION, PruningPolicy

#: Versions recorded with every candidate.
VERSIONS = {
    "prunepilot": __version__,
    "torch": str(torch.__version__),
    "torch_pruning": TORCH_PRUNING_VERSION,
    "python": platform.python_version(),
}


@dataclass(frozen=True)
class DeviceLatency:
    """A candidate's in-loop latency on one of the search's other devices (``device.also``).

    Predicted from the widths: by the device's own latency model when it predicts, else by an
    in-loop predictor calibrated on it when the search started (``latency_model`` says which, e.g.
    ``torch-cpu~fit``). A measurement after the search is :attr:`Candidate.measured_on`.
    """

    latency_ms: float
    latency_kind: str
    latency_model: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeviceLatency:
        """From a wire ``metrics.devices[NAME]`` dict (re-measured figures there are ignored)."""
        return cls(float(data["latency_ms"]), str(data["latency_kind"]), str(data["latency_model"]))


@dataclass(frozen=True)
class Metrics:
    """One evaluated candidate.

    Attributes:
        accuracy: Top-1 on the held-out split of the training data (never the test split).
        latency_ms: Latency on the target device at the configured batch size.
        latency_kind: ``"measured"`` or ``"predicted"``.
        latency_model: Name of the latency model that gave ``latency_ms``.
        macs: MACs per sample (analytic).
        params: Parameters (analytic).
        eval_seconds: Wall time of this evaluation.
        latency_cv: Coefficient of variation of the timing runs (measured only).
        protocol: The scoring protocol that gave ``accuracy`` (``evaluation.protocol``); the
            evaluator always sets it. None only in records written before protocols existed,
            which were all ``bn-recal`` (:func:`scoring_protocol` reads them so), and then left
            out of the JSON so that such records round-trip unchanged.
        device: The device ``latency_*`` refer to when it is not the search's own (a candidate seen on
            another device, :func:`prunepilot.search.devices.on_device`); None, and left out of the
            JSON, for the search's device (``device.name``).
        devices: Latency on each of ``device.also``, by device name; empty, and left out of the JSON,
            without them (so records from before they existed round-trip unchanged).
    """

    accuracy: float
    latency_ms: float
    latency_kind: str
    latency_model: str
    macs: int
    params: int
    eval_seconds: float
    latency_cv: float | None = None
    protocol: str | None = None
    device: str | None = None
    devices: Mapping[str, DeviceLatency] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = asdict(self)
        for key in ("protocol", "device", "devices"):
            if not out[key]:
                del out[key]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Metrics:
        """From a wire ``metrics`` dict; keys that are not metrics (``within_budget``, re-measured
        figures) are ignored."""
        found = {k: data[k] for k in _METRIC_FIELDS if k in data}
        found["devices"] = {str(n): DeviceLatency.from_json(d) for n, d in (data.get("devices") or {}).items()}
        return cls(**found)


_METRIC_FIELDS = tuple(f.name for f in dataclasses.fields(Metrics))


@dataclass(frozen=True)
class Measurement:
    """A front candidate's latency measured on the device after the search (its predicted
    figure stays in :attr:`Candidate.metrics`). On the wire: ``metrics.measured_latency_ms``,
    ``metrics.measured_latency_cv`` and ``metrics.measured_with``."""

    latency_ms: float
    cv: float | None
    latency_model: str

    def to_json(self) -> dict[str, Any]:
        return {
            "measured_latency_ms": self.latency_ms,
            "measured_latency_cv": self.cv,
            "measured_with": self.latency_model,
        }

    @classmethod
    def from_json(cls, metrics: Mapping[str, Any]) -> Measurement | None:
        """From a wire ``metrics`` dict (None when it holds no re-measured figure)."""
        ms = metrics.get("measured_latency_ms")
        if ms is None:
            return None
        cv = metrics.get("measured_latency_cv")
        return cls(float(ms), None if cv is None else float(cv), str(metrics.get("measured_with") or "?"))


#: Wire keys of a candidate that are fields of :class:`Candidate` (the rest go to ``extra``).
_CANDIDATE_KEYS = frozenset(
    {"id", "status", "strategy", "trial", "index", "seed", "budget_ms", "policy", "metrics", "cached", "node",
     "node_id", "pid", "wall_time", "versions"}
)  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """One evaluated pruning policy: what a strategy reported, with where and when.

    Attributes:
        id: ``<trial>-<index:04d>``, unique in the run (the store refuses a second one).
        strategy: The strategy that proposed it (``uniform`` for the driver's baseline).
        policy: The evaluated policy.
        metrics: How it scored.
        budget_ms: The search's latency budget.
        trial: The trial that reported it.
        index: Its number among the trial's candidates.
        seed: The trial's seed.
        cached: Whether the metrics came from an evaluation cache.
        measured: Its latency re-measured on the device (front points only), else None.
        measured_on: Its latency measured on other devices of ``device.also`` after the search (their
            front points only), by device name; on the wire inside ``metrics.devices[NAME]``.
        extra: Strategy-specific fields (``episode``, ``uniform_ratio``, ``path_step``...).
        node, node_id, pid, wall_time, versions: Provenance.
    """

    id: str
    strategy: str
    policy: PruningPolicy
    metrics: Metrics
    budget_ms: float | None = None
    trial: str = ""
    index: int = 0
    seed: int = 0
    cached: bool = False
    measured: Measurement | None = None
    measured_on: Mapping[str, Measurement] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    node: str | None = None
    node_id: str | None = None
    pid: int | None = None
    wall_time: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    status: Literal["ok"] = "ok"

    @classmethod
    def new(
        cls,
        *,
        trial: str,
        index: int,
        strategy: str,
        seed: int,
        policy: PruningPolicy,
        metrics: Metrics,
        budget_ms: float,
        extra: Mapping[str, Any],
        cached: bool,
    ) -> Candidate:
        """A candidate evaluated here and now (provenance filled in).

        ``extra`` may set ``cached`` (an agent knows its own cache hits); any other key that
        names a field of the record is refused.
        """
        clash = sorted(set(extra) & (_CANDIDATE_KEYS - {"cached"}))
        if clash:
            raise ValueError(f"a strategy's extra fields may not be named {clash}: they are fields of every candidate")
        rest = {k: v for k, v in extra.items() if k != "cached"}
        return cls(
            id=f"{trial}-{index:04d}",
            strategy=strategy,
            policy=policy,
            metrics=metrics,
            budget_ms=budget_ms,
            trial=trial,
            index=index,
            seed=seed,
            cached=bool(extra.get("cached", cached)),
            extra=rest,
            node=socket.gethostname(),
            node_id=_node_id(),
            pid=os.getpid(),
            wall_time=time.time(),
            versions=dict(VERSIONS),
        )

    # --- what the figures say ------------------------------------------------------------
    @property
    def budget_latency_ms(self) -> float:
        """The latency budgets are judged on: the re-measured figure when there is one."""
        return self.measured.latency_ms if self.measured is not None else self.metrics.latency_ms

    @property
    def within_budget(self) -> bool | None:
        """Whether :attr:`budget_latency_ms` fits the search's budget (None without a budget)."""
        return None if self.budget_ms is None else bool(self.budget_latency_ms <= self.budget_ms)

    def with_measurement(self, measured: Measurement | None) -> Candidate:
        """This candidate with ``measured`` attached (itself when that changes nothing)."""
        return self if measured == self.measured else dataclasses.replace(self, measured=measured)

    def with_measured_on(self, measured: Mapping[str, Measurement]) -> Candidate:
        """This candidate with ``measured`` (by device name) added to :attr:`measured_on`."""
        merged = {**self.measured_on, **measured}
        return self if merged == self.measured_on else dataclasses.replace(self, measured_on=merged)

    # --- the wire format -----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The wire record (a fresh dict)."""
        metrics = self.metrics.to_dict()
        metrics["within_budget"] = self.within_budget
        if self.measured is not None:
            metrics.update(self.measured.to_json())
        for name, m in self.measured_on.items():
            metrics.setdefault("devices", {}).setdefault(name, {}).update(m.to_json())
        return {
            "id": self.id,
            "status": self.status,
            "strategy": self.strategy,
            "trial": self.trial,
            "index": self.index,
            "seed": self.seed,
            "budget_ms": self.budget_ms,
            "policy": self.policy.model_dump(mode="json"),
            "metrics": metrics,
            "cached": self.cached,
            "node": self.node,
            "node_id": self.node_id,
            "pid": self.pid,
            "wall_time": self.wall_time,
            "versions": dict(self.versions),
            **self.extra,
        }

    @cached_property
    def wire(self) -> Mapping[str, Any]:
        """:meth:`to_json`, computed once: what dotted-path lookups (objectives, tables) read. Do not modify."""
        return self.to_json()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Candidate:
        """From a wire record (today's and every earlier ``candidates.jsonl`` line)."""
        if data.get("status", "ok") != "ok":
            raise ValueError(f"record {data.get('id')!r} has status {data.get('status')!r}, not 'ok'")
        metrics = data["metrics"]
        budget = data.get("budget_ms")
        return cls(
            id=str(data["id"]),
            strategy=str(data.get("strategy", "?")),
            policy=PruningPolicy.model_validate(data["policy"]),
            metrics=Metrics.from_json(metrics),
            budget_ms=None if budget is None else float(budget),
            trial=str(data.get("trial", "")),
            index=int(data.get("index", 0)),
            seed=int(data.get("seed", 0)),
            cached=bool(data.get("cached", False)),
            measured=Measurement.from_json(metrics),
            measured_on={
                str(n): m
                for n, d in (metrics.get("devices") or {}).items()
                if (m := Measurement.from_json(d)) is not None
            },
            extra={k: v for k, v in data.items() if k not in _CANDIDATE_KEYS},
            node=data.get("node"),
            node_id=data.get("node_id"),
            pid=data.get("pid"),
            wall_time=float(data.get("wall_time", 0.0)),
            versions=dict(data.get("versions") or {}),
        )


@dataclass(frozen=True)
class FailedTrial:
    """A trial that raised (after its retries): recorded beside the candidates, never in a front."""

    id: str
    trial: str
    config: dict[str, Any]
    error: str
    wall_time: float
    status: Literal["failed"] = "failed"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FailedTrial:
        return cls(
            id=str(data["id"]),
            trial=str(data.get("trial", "")),
            config=dict(data.get("config") or {}),
            error=str(data.get("error", "")),
            wall_time=float(data.get("wall_time", 0.0)),
        )


Record = Candidate | FailedTrial


def record_from_json(data: Mapping[str, Any]) -> Record:
    """A :class:`Candidate` or a :class:`FailedTrial`, by the record's ``status``."""
    return FailedTrial.from_json(data) if data.get("status") == "failed" else Candidate.from_json(data)


def as_wire(record: Candidate | Mapping[str, Any]) -> Mapping[str, Any]:
    """The wire form of a candidate given as a record or already as a wire dict."""
    return record.wire if isinstance(record, Candidate) else record


def _node_id() -> str | None:
    """The Ray node this runs on; None outside Ray (Ray is never imported here to ask)."""
    ray = sys.modules.get("ray")
    try:
        return str(ray.get_runtime_context().get_node_id()) if ray is not None and ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - outside a Ray worker there is no node
        return None


def scoring_protocol(candidate: Candidate | Mapping[str, Any]) -> str:
    """The protocol that scored ``candidate`` (records from before protocols: ``bn-recal``)."""
    metrics = as_wire(candidate).get("metrics") or {}
    found = metrics.get("protocol") if isinstance(metrics, Mapping) else None
    return str(found) if found else "bn-recal"


def check_one_protocol(candidates: Iterable[Candidate | Mapping[str, Any]]) -> str | None:
    """The one scoring protocol of the ``ok`` candidates (None if there are none).

    Raises:
        ConfigError: they were scored by more than one protocol; scores of different protocols
            are not comparable, so no front mixes them.
    """
    found = sorted({scoring_protocol(c) for c in candidates if as_wire(c).get("status") == "ok"})
    if len(found) > 1:
        raise ConfigError(
            f"these candidates were scored by different protocols {found}; accuracies of different protocols "
            "are not comparable, so a front never mixes them: compute one front per protocol"
        )
    return found[0] if found else None
