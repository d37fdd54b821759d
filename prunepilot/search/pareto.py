"""Pareto fronts, hypervolume and budget picks over evaluated candidates.

A candidate is a :class:`~prunepilot.search.records.Candidate` or its wire form (one line of a
run's ``candidates.jsonl``): a dict with at least ``id``, ``status`` (``"ok"`` | ``"failed"``)
and ``metrics`` (``accuracy``, ``latency_ms``, ``latency_kind``, ``latency_model``, ``macs``,
``params`` and, once re-measured on the device, ``measured_latency_ms``). Objectives name values
inside the wire form by a dotted path, so any metric can become an axis of the front. Functions
return the objects they were given. The front's text table is :mod:`prunepilot.search.front_table`.

Example:
    >>> cands = [
    ...     {"id": "a", "status": "ok", "metrics": {"accuracy": 0.9, "latency_ms": 3.0}},
    ...     {"id": "b", "status": "ok", "metrics": {"accuracy": 0.8, "latency_ms": 4.0}},
    ...     {"id": "c", "status": "ok", "metrics": {"accuracy": 0.7, "latency_ms": 1.0}},
    ... ]
    >>> [c["id"] for c in pareto_front(cands)]
    ['c', 'a']
    >>> round(hypervolume(to_minimisation(pareto_front(cands)), [0.0, 5.0]), 6)
    3.2
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from prunepilot.errors import ConfigError, one_of
from prunepilot.search.records import Candidate, as_wire, check_one_protocol

__all__ = [
    "ACCURACY",
    "LATENCY",
    "MACS",
    "OBJECTIVES",
    "PARAMS",
    "Objective",
    "base_value",
    "best_within_budget",
    "budget_latency",
    "default_reference",
    "hypervolume",
    "objective_value",
    "objectives_from_names",
    "pareto_front",
    "to_minimisation",
]

C = TypeVar("C", bound=Candidate | Mapping[str, Any])


@dataclasses.dataclass(frozen=True)
class Objective:
    """One axis of the front: a value inside each candidate and which way is better."""

    key: str
    """Dotted path into the candidate, e.g. ``"metrics.accuracy"``."""
    direction: Literal["max", "min"]
    """``"max"`` if larger is better (accuracy), ``"min"`` if smaller is (latency, MACs)."""

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min"):
            raise ConfigError(f"objective {self.key!r} has direction {self.direction!r}; use 'max' or 'min'")

    @property
    def name(self) -> str:
        """Last segment of the key (``"latency_ms"`` for ``"metrics.latency_ms"``)."""
        return self.key.rsplit(".", 1)[-1]

    @property
    def sign(self) -> float:
        """Factor turning the value into a "smaller is better" one (-1 for maximised)."""
        return -1.0 if self.direction == "max" else 1.0


ACCURACY = Objective("metrics.accuracy", "max")
LATENCY = Objective("metrics.latency_ms", "min")
MACS = Objective("metrics.macs", "min")
PARAMS = Objective("metrics.params", "min")

OBJECTIVES: Mapping[str, Objective] = {
    "accuracy": ACCURACY,
    "latency_ms": LATENCY,
    "measured_latency_ms": Objective("metrics.measured_latency_ms", "min"),
    "macs": MACS,
    "params": PARAMS,
}
"""Objectives selectable by name (CLI ``--objectives accuracy,latency_ms,macs``)."""


def objectives_from_names(names: Iterable[str]) -> tuple[Objective, ...]:
    """Objectives for names such as ``["accuracy", "latency_ms", "macs"]``.

    Raises:
        ConfigError: an unknown or repeated name, or no names at all.
    """
    out: list[Objective] = []
    for raw in names:
        name = raw.strip()
        if name not in OBJECTIVES:
            raise ConfigError(f"unknown objective {name!r}; valid objectives are {one_of(OBJECTIVES)}")
        if OBJECTIVES[name] in out:
            raise ConfigError(f"objective {name!r} is given twice; name each objective once")
        out.append(OBJECTIVES[name])
    if not out:
        raise ConfigError(f"no objectives given; choose at least one of {one_of(OBJECTIVES)}")
    return tuple(out)


def _lookup(record: Mapping[str, Any], key: str) -> Any:
    node: Any = record
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def objective_value(candidate: Candidate | Mapping[str, Any], objective: Objective) -> float:
    """The objective's value in ``candidate`` as a float (in its own orientation).

    Raises:
        ValueError: the candidate has no value at ``objective.key`` or it is not a number.
    """
    wire = as_wire(candidate)
    try:
        value = _lookup(wire, objective.key)
        return float(value)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"candidate {wire.get('id', '?')!r} has no numeric {objective.key!r}"
            f" (got {exc!r}); every 'ok' candidate needs a value for each objective"
        ) from exc


def to_minimisation(
    candidates: Sequence[Candidate | Mapping[str, Any]], objectives: Sequence[Objective] = (ACCURACY, LATENCY)
) -> NDArray[np.float64]:
    """Objective values as an ``(n, m)`` array where smaller is better in every column.

    Maximised objectives are negated (accuracy 0.9 becomes -0.9). Status is not looked at.
    """
    values = [[o.sign * objective_value(c, o) for o in objectives] for c in candidates]
    return np.asarray(values, dtype=np.float64).reshape(len(candidates), len(objectives))


def _usable(candidates: Iterable[C], objectives: Sequence[Objective]) -> tuple[list[C], NDArray[np.float64]]:
    """``ok`` candidates with finite values for every objective, and their minimisation matrix."""
    kept = [c for c in candidates if as_wire(c).get("status") == "ok"]
    check_one_protocol(kept)
    points = to_minimisation(kept, objectives)
    finite = np.asarray(np.isfinite(points).all(axis=1), dtype=bool)
    return [c for c, f in zip(kept, finite.tolist(), strict=True) if f], points[finite]


def _nondominated_mask(points: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Which rows no other row dominates (all minimised); identical rows do not dominate."""
    n, m = points.shape
    keep = np.ones(n, dtype=bool)
    if n == 0:
        return keep
    if m == 1:
        return points[:, 0] == points[:, 0].min()
    if m == 2:  # O(n log n): sort by (f0, f1), sweep the best f1 of strictly smaller f0
        order = np.lexsort((points[:, 1], points[:, 0]))
        keep[:] = False
        best_before = math.inf
        i = 0
        while i < n:
            j = i
            f0 = points[order[i], 0]
            while j < n and points[order[j], 0] == f0:
                j += 1
            group_min = points[order[i], 1]  # sorted by f1 inside equal f0
            if group_min < best_before:
                for k in range(i, j):
                    if points[order[k], 1] == group_min:
                        keep[order[k]] = True
            best_before = min(best_before, group_min)
            i = j
        return keep
    for i in range(n):  # O(n^2 m)
        no_worse = (points <= points[i]).all(axis=1)
        better = (points < points[i]).any(axis=1)
        keep[i] = not (no_worse & better).any()
    return keep


def pareto_front(candidates: Iterable[C], objectives: Sequence[Objective] = (ACCURACY, LATENCY)) -> list[C]:
    """The non-dominated ``ok`` candidates.

    A candidate is dominated if another is at least as good in every objective and strictly
    better in one; candidates with identical objective vectors are all kept. Failed candidates
    and ``ok`` ones with a non-finite value (NaN accuracy, infinite latency) are left out.
    O(n log n) for two objectives, O(n^2 m) for more.

    Returns:
        The same candidate objects, sorted by the first minimised objective ascending (by the
        first objective, best first, if all are maximised), then by the other objectives.

    Raises:
        ValueError: an ``ok`` candidate lacks one of the objectives.
        ConfigError: the candidates were scored by more than one protocol.
    """
    if not objectives:
        raise ConfigError(f"no objectives given; choose at least one of {one_of(OBJECTIVES)}")
    kept, points = _usable(candidates, objectives)
    mask = _nondominated_mask(points)
    front = [c for c, k in zip(kept, mask.tolist(), strict=True) if k]
    points = points[mask]
    first = next((j for j, o in enumerate(objectives) if o.direction == "min"), 0)
    columns = [first] + [j for j in range(len(objectives)) if j != first]
    if not front:
        return []
    order = np.lexsort([points[:, j] for j in reversed(columns)])
    return [front[int(i)] for i in order]


def _hv_sweep_2d(points: NDArray[np.float64], ref: NDArray[np.float64]) -> float:
    order = np.lexsort((points[:, 1], points[:, 0]))
    xs = np.append(points[order, 0], ref[0])
    best_y = np.minimum.accumulate(points[order, 1])
    return float(np.sum((xs[1:] - xs[:-1]) * (ref[1] - best_y)))


def _hv(points: NDArray[np.float64], ref: NDArray[np.float64]) -> float:
    m = points.shape[1]
    if len(points) == 0:
        return 0.0
    if m == 1:
        return float(ref[0] - points[:, 0].min())
    if m == 2:
        return _hv_sweep_2d(points, ref)
    points = points[_nondominated_mask(points)]
    order = np.argsort(points[:, -1], kind="stable")
    points = points[order]
    tops = np.append(points[1:, -1], ref[-1])
    volume = 0.0
    for i in range(len(points)):  # slab between the i-th and the next last coordinate
        depth = tops[i] - points[i, -1]
        if depth > 0:
            volume += depth * _hv(points[: i + 1, :-1], ref[:-1])
    return volume


def hypervolume(points: ArrayLike, reference: ArrayLike) -> float:
    """Exact volume dominated by ``points`` and bounded by ``reference`` (all minimised).

    Points that do not strictly dominate the reference add nothing. Two objectives use a sweep,
    O(n log n); more use exact slicing along the last objective (HSO), O(n^(m-1) log n) for m
    objectives: fine for the few hundred points of a run's front.

    Args:
        points: ``(n, m)`` values, smaller is better in every column (see :func:`to_minimisation`).
        reference: ``(m,)`` reference point, worse than every point that should count.

    Example:
        >>> hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4])
        6.0
    """
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return 0.0
    pts = pts.reshape(-1, ref.size) if pts.ndim == 1 else pts
    if pts.shape[1] != ref.size:
        raise ValueError(
            f"points have {pts.shape[1]} objectives but the reference has {ref.size}; give one"
            " reference value per objective"
        )
    if not (np.isfinite(ref).all() and np.isfinite(pts).all()):
        raise ValueError("hypervolume needs finite points and reference; drop NaN/inf candidates first")
    inside = (pts < ref).all(axis=1)
    return _hv(pts[inside], ref)


def _as_record(base: Any) -> Mapping[str, Any]:
    if isinstance(base, Candidate):
        return base.wire
    if dataclasses.is_dataclass(base) and not isinstance(base, type):
        base = dataclasses.asdict(base)
    if not isinstance(base, Mapping):
        raise TypeError(f"base must be a candidate dict, a metrics dict or a Metrics, not {type(base)}")
    return base if "metrics" in base else {"metrics": base}


def base_value(base: Any, objective: Objective) -> float | None:
    """The base model's value of ``objective``, or None if ``base`` does not carry it.

    ``base`` may be a :class:`Candidate`, a candidate-like dict, a flat metrics dict or a ``Metrics``.
    """
    try:
        value = float(_lookup(_as_record(base), objective.key))
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def default_reference(
    candidates: Iterable[Candidate | Mapping[str, Any]],
    objectives: Sequence[Objective] = (ACCURACY, LATENCY),
    base: Any = None,
) -> NDArray[np.float64]:
    """A reference point for :func:`hypervolume`, in minimisation orientation.

    * maximised objectives (accuracy): 0, the worst possible accuracy (or 1.1 x the lowest
      value if some value is negative);
    * minimised objectives (latency, MACs, params): 1.1 x the base model's value when ``base``
      is given, so hypervolumes of different runs on one model are comparable; otherwise
      1.1 x the worst value among the ``ok`` candidates (comparable only within the run).

    Raises:
        ValueError: no ``ok`` candidate with finite values and no base value to anchor on.
    """
    _, points = _usable(candidates, objectives)
    ref = np.empty(len(objectives), dtype=np.float64)
    for j, obj in enumerate(objectives):
        anchor = base_value(base, obj) if base is not None and obj.direction == "min" else None
        if anchor is not None:
            ref[j] = 1.1 * anchor
            continue
        if obj.direction == "max":  # 0, unless some original value is negative
            ref[j] = max(0.0, 1.1 * float(points[:, j].max())) if len(points) else 0.0
            continue
        if len(points) == 0:
            raise ValueError(
                f"no 'ok' candidate with a finite {obj.key!r} to place the reference on;"
                " pass base= (the unpruned model's metrics) or a reference point explicitly"
            )
        worst = float(points[:, j].max())
        ref[j] = worst + (0.1 * abs(worst) if worst != 0 else 1.0)
    return ref


def budget_latency(candidate: Candidate | Mapping[str, Any]) -> float | None:
    """The latency a budget is judged on: the re-measured figure when there is one, else
    ``metrics.latency_ms`` (None when neither is a number)."""
    metrics = as_wire(candidate).get("metrics")
    if not isinstance(metrics, Mapping):
        return None
    for key in ("measured_latency_ms", "latency_ms"):
        value = metrics.get(key)
        if value is not None:
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


def best_within_budget(candidates: Iterable[C], budget_ms: float, latency_key: str | None = None) -> C | None:
    """The most accurate ``ok`` candidate with latency <= ``budget_ms`` (ties: lower latency).

    By default the latency is :func:`budget_latency`: a front point re-measured over the
    budget is never picked on its (lower) predicted figure. ``latency_key`` names another
    dotted path; candidates without a finite value there (e.g. never re-measured when
    ``latency_key="metrics.measured_latency_ms"``) are skipped. Returns None if nothing fits.

    Raises:
        ConfigError: a negative or NaN budget.
    """
    if not budget_ms >= 0:
        raise ConfigError(f"budget must be a non-negative number of milliseconds, not {budget_ms!r}")
    best: C | None = None
    best_key = (-math.inf, -math.inf)
    latency_obj = Objective(latency_key, "min") if latency_key is not None else None
    for cand in candidates:
        if as_wire(cand).get("status") != "ok":
            continue
        if latency_obj is None:
            latency = budget_latency(cand)
            if latency is None:
                continue
        else:
            try:
                latency = objective_value(cand, latency_obj)
            except ValueError:
                continue
        accuracy = objective_value(cand, ACCURACY)
        if not (math.isfinite(latency) and math.isfinite(accuracy)) or latency > budget_ms:
            continue
        if (accuracy, -latency) > best_key:
            best, best_key = cand, (accuracy, -latency)
    return best
