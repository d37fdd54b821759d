"""Measured latency on this machine: the timing protocol, CPU (torch eager) and CUDA.

The protocol (:class:`MeasureProtocol`), shared by every measured runtime in prunepilot
(torch CPU/CUDA, ONNX Runtime, the device server):

1. set the thread count explicitly (restored afterwards);
2. warm up;
3. time single runs with ``time.perf_counter`` (CUDA: events + synchronize) until both
   ``min_runs`` runs and ``min_seconds`` have passed (at most ``max_runs``/``max_seconds``).
   With ``clock="thread"`` (one thread only) CPU runs are timed with ``time.thread_time``
   instead: the CPU time of the timing thread, which time slices given to other processes do
   not inflate. On a shared machine this is far more repeatable; it still includes cache and
   memory-bandwidth interference, and it is not wall-clock latency;
4. report the median, the interquartile range and the coefficient of variation (std/mean);
5. if the CV is above ``cv_threshold``, measure again (up to ``max_attempts`` in all), keep
   the attempt with the lowest CV and flag ``unstable`` in the details if it is still above.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from prunepilot.hw_models.base import (
    HardwareError,
    LatencyModel,
    LatencyResult,
    batched_input_shape,
    runtime_versions,
)
from prunepilot.hw_models.registry import register_latency_model


@dataclass(frozen=True)
class MeasureProtocol:
    """How one latency measurement is taken.

    Attributes:
        threads: Intra-op threads for the runtime (``torch.set_num_threads``); ``None`` keeps
            the current setting. One thread is the default because it is the most repeatable
            on a shared machine.
        warmup: Untimed runs before timing.
        min_runs: Timed runs at least.
        max_runs: Timed runs at most.
        min_seconds: Keep timing until this much time has passed (and ``min_runs`` reached).
        max_seconds: Stop timing after this long even if ``min_runs`` is not reached (at least
            3 runs are always timed).
        cv_threshold: An attempt whose coefficient of variation is above this is re-measured.
        max_attempts: Attempts in all (1 = never re-measure).
        seed: Seed of the random input tensor.
        clock: ``"wall"`` (``time.perf_counter``: latency) or ``"thread"`` (``time.thread_time``:
            CPU time of the calling thread; needs ``threads=1``, immune to time slicing).
    """

    threads: int | None = 1
    warmup: int = 5
    min_runs: int = 20
    max_runs: int = 300
    min_seconds: float = 0.3
    max_seconds: float = 20.0
    cv_threshold: float = 0.10
    max_attempts: int = 3
    seed: int = 0
    clock: str = "wall"

    def __post_init__(self) -> None:
        if self.clock not in ("wall", "thread"):
            raise HardwareError(f"clock must be 'wall' or 'thread', got {self.clock!r}")
        if self.clock == "thread" and self.threads != 1:
            raise HardwareError(
                f"clock='thread' times only the calling thread, so it needs threads=1 (got {self.threads}); "
                "use clock='wall' for multi-threaded runs"
            )
        if self.threads is not None and self.threads < 1:
            raise HardwareError(f"threads must be >= 1 (or None to keep the current setting), got {self.threads}")
        if self.min_runs < 3 or self.max_runs < self.min_runs:
            raise HardwareError(
                f"need 3 <= min_runs <= max_runs, got min_runs={self.min_runs}, max_runs={self.max_runs}"
            )
        if self.max_attempts < 1 or self.warmup < 0:
            raise HardwareError(f"need max_attempts >= 1 and warmup >= 0, got {self.max_attempts}, {self.warmup}")

    def record(self) -> dict[str, Any]:
        """The protocol settings, for result details."""
        return asdict(self)


@dataclass(frozen=True)
class TimingStats:
    """Statistics of the kept attempt of one measurement (all times in ms)."""

    median_ms: float
    iqr_ms: float
    cv: float
    mean_ms: float
    min_ms: float
    runs: int
    attempts: int
    unstable: bool
    attempt_cvs: tuple[float, ...]

    def record(self) -> dict[str, Any]:
        """Fields for result details."""
        return asdict(self)


def summarize(samples_ms: Sequence[float]) -> tuple[float, float, float]:
    """``(median, IQR, CV)`` of timed runs; CV is the sample std over the mean."""
    if len(samples_ms) < 2:
        raise HardwareError(f"need at least 2 timed runs to summarise, got {len(samples_ms)}")
    q1, med, q3 = statistics.quantiles(samples_ms, n=4, method="inclusive")
    mean = statistics.fmean(samples_ms)
    cv = statistics.stdev(samples_ms) / mean if mean > 0 else 0.0
    return med, q3 - q1, cv


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Set ``torch.set_num_threads(threads)`` inside the block; restore the old value after."""
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def time_runs(time_once: Callable[[], float], protocol: MeasureProtocol) -> TimingStats:
    """Run the protocol (warm-up, timed runs, re-measure on high CV) on ``time_once``.

    ``time_once`` runs the workload once and returns its duration in milliseconds.
    """
    for _ in range(protocol.warmup):
        time_once()
    attempts: list[tuple[float, float, float, list[float]]] = []
    for _ in range(protocol.max_attempts):
        samples: list[float] = []
        start = time.perf_counter()
        while len(samples) < protocol.max_runs:
            samples.append(time_once())
            elapsed = time.perf_counter() - start
            if len(samples) >= protocol.min_runs and elapsed >= protocol.min_seconds:
                break
            if elapsed >= protocol.max_seconds and len(samples) >= 3:
                break
        med, iqr, cv = summarize(samples)
        attempts.append((cv, med, iqr, samples))
        if cv <= protocol.cv_threshold:
            break
    cv, med, iqr, samples = min(attempts, key=lambda a: a[0])
    return TimingStats(
        median_ms=med,
        iqr_ms=iqr,
        cv=cv,
        mean_ms=statistics.fmean(samples),
        min_ms=min(samples),
        runs=len(samples),
        attempts=len(attempts),
        unstable=cv > protocol.cv_threshold,
        attempt_cvs=tuple(a[0] for a in attempts),
    )


def time_cpu_callable(fn: Callable[[], object], protocol: MeasureProtocol) -> TimingStats:
    """Time ``fn()`` under ``protocol`` (threads set by the caller) with its clock:
    ``time.perf_counter`` or, for ``clock="thread"``, ``time.thread_time``."""
    clock = time.thread_time if protocol.clock == "thread" else time.perf_counter

    def once() -> float:
        t0 = clock()
        fn()
        return (clock() - t0) * 1e3

    return time_runs(once, protocol)


def cpu_name() -> str:
    """CPU model name from /proc/cpuinfo (Linux) or ``platform.processor()``."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measured_result(
    stats: TimingStats,
    model_name: str,
    runtime: str,
    protocol: MeasureProtocol,
    threads: int,
    shape: Sequence[int],
    versions: dict[str, str],
    **extra: Any,
) -> LatencyResult:
    """Pack timing statistics and the protocol record into a measured :class:`LatencyResult`."""
    details: dict[str, Any] = {
        "runtime": runtime,
        "clock": "cuda-events" if "cuda" in runtime else protocol.clock,
        "versions": versions,
        "threads": threads,
        "batch_size": int(shape[0]),
        "input_shape": list(shape),
        "device": cpu_name() if "cuda" not in runtime else extra.pop("device", "cuda"),
        "protocol": protocol.record(),
        **stats.record(),
        **extra,
    }
    return LatencyResult(
        ms=stats.median_ms, kind="measured", model_name=model_name, cv=stats.cv, iqr_ms=stats.iqr_ms, details=details
    )


def for_paired_rounds(latency: LatencyModel, runs: int | None) -> LatencyModel:
    """``latency`` as one round of a paired timing (a model timed right after the base, the median
    of several rounds' ratios the figure) should time: ``runs`` timed runs after two warm-up runs,
    one attempt, no minimum time. Pairing and the median over rounds already absorb the load that
    the full protocol's repeats and CV re-measures are there for, at several times the cost (at
    batch 256 on this machine one full measurement of a small CNN takes about 4 s).

    A copy; ``latency`` itself is unchanged. A latency model without a :class:`MeasureProtocol`
    (remote devices, predictors), or ``runs`` None, is returned as it is.
    """
    protocol = getattr(latency, "protocol", None)
    if runs is None or not isinstance(protocol, MeasureProtocol):
        return latency
    light = copy.copy(latency)
    light.protocol = replace(  # type: ignore[attr-defined]
        protocol, warmup=min(protocol.warmup, 2), min_runs=runs, max_runs=runs, min_seconds=0.0, max_attempts=1
    )
    return light


def protocol_from_settings(settings: dict[str, Any]) -> MeasureProtocol:
    """A :class:`MeasureProtocol` from keyword settings (a device config's ``settings``)."""
    try:
        return MeasureProtocol(**settings)
    except TypeError as exc:
        raise HardwareError(
            f"unknown measurement setting: {exc}; accepted: {sorted(MeasureProtocol.__dataclass_fields__)}"
        ) from None


@register_latency_model("torch-cpu")
class TorchCPULatency(LatencyModel):
    """Measured: torch eager on this machine's CPU, with :class:`MeasureProtocol`.

    Example:
        >>> lm = TorchCPULatency(threads=1, min_runs=5, min_seconds=0.0)
        >>> res = lm.measure_ms(torch.nn.Linear(8, 8), (1, 8))
        >>> res.kind, res.details["threads"]
        ('measured', 1)
    """

    requires_model = True

    def __init__(self, **protocol: Any) -> None:
        self.protocol = protocol_from_settings(protocol)

    def measure_ms(self, model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> LatencyResult:
        shape = batched_input_shape(input_shape, batch_size)
        gen = torch.Generator().manual_seed(self.protocol.seed)
        x = torch.randn(*shape, generator=gen)
        was_training = model.training
        model.eval()
        try:
            with torch_threads(self.protocol.threads) as threads, torch.inference_mode():
                stats = time_cpu_callable(lambda: model(x), self.protocol)
        finally:
            model.train(was_training)
        return measured_result(stats, self.name, "torch-eager-cpu", self.protocol, threads, shape, runtime_versions())

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "protocol": self.protocol.record()}


@register_latency_model("torch-cuda")
class TorchCUDALatency(LatencyModel):
    """Measured: torch eager on a CUDA GPU, timed with CUDA events after synchronising.

    ``cudnn_benchmark`` is fixed for the measurement (default ``False``: the algorithm choice
    does not change between candidates) and restored afterwards.
    """

    requires_model = True

    def __init__(self, device: str = "cuda:0", cudnn_benchmark: bool = False, **protocol: Any) -> None:
        self.device = device
        self.cudnn_benchmark = cudnn_benchmark
        self.protocol = protocol_from_settings(protocol)

    def measure_ms(self, model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> LatencyResult:
        if not torch.cuda.is_available():
            raise HardwareError(
                "CUDA is not available on this machine (torch.cuda.is_available() is False); "
                "use latency model 'torch-cpu' or 'onnxruntime-cpu', or a 'remote' device server on the GPU host"
            )
        shape = batched_input_shape(input_shape, batch_size)
        dev = torch.device(self.device)
        gen = torch.Generator().manual_seed(self.protocol.seed)
        x = torch.randn(*shape, generator=gen).to(dev)
        old_bench = torch.backends.cudnn.benchmark
        was_training = model.training
        first = next(model.parameters(), None)
        home = first.device if first is not None else torch.device("cpu")
        model.eval()
        try:
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
            m = model.to(dev)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

            def once() -> float:
                torch.cuda.synchronize(dev)
                start.record()
                m(x)
                end.record()
                torch.cuda.synchronize(dev)
                return float(start.elapsed_time(end))

            with torch.inference_mode():
                stats = time_runs(once, self.protocol)
        finally:
            torch.backends.cudnn.benchmark = old_bench
            model.to(home)  # leave the caller's model where it was
            model.train(was_training)
        return measured_result(
            stats,
            self.name,
            "torch-cuda",
            self.protocol,
            torch.get_num_threads(),
            shape,
            runtime_versions(),
            device=torch.cuda.get_device_name(dev),
            cudnn_benchmark=self.cudnn_benchmark,
            cuda_version=torch.version.cuda,
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": self.device, "protocol": self.protocol.record()}
