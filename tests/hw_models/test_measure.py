"""The measurement protocol: warm-up, timed runs, median/IQR/CV, re-measure, recorded fields."""

from __future__ import annotations

import itertools

import pytest
import torch

from prunepilot.hw_models.base import HardwareError
from prunepilot.hw_models.measure import (
    MeasureProtocol,
    TorchCPULatency,
    TorchCUDALatency,
    for_paired_rounds,
    summarize,
    time_runs,
    torch_threads,
)
from prunepilot.hw_models.onnxrt import OnnxRuntimeLatency
from prunepilot.hw_models.testing import FAST, tiny_net


def test_summarize_median_iqr_cv() -> None:
    med, iqr, cv = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert med == 3.0
    assert iqr == pytest.approx(2.0)
    assert cv == pytest.approx((2.5**0.5) / 3.0)


def test_threads_are_set_and_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_high_cv_is_remeasured_then_flagged_unstable() -> None:
    noisy = itertools.cycle([1.0, 10.0])  # CV ~ 0.9 on every attempt
    proto = MeasureProtocol(warmup=0, min_runs=4, max_runs=4, min_seconds=0.0, cv_threshold=0.1, max_attempts=3)
    stats = time_runs(lambda: next(noisy), proto)
    assert stats.attempts == 3 and stats.unstable and len(stats.attempt_cvs) == 3
    steady = time_runs(lambda: 2.0, proto)
    assert steady.attempts == 1 and not steady.unstable and steady.cv == 0.0 and steady.median_ms == 2.0


def test_cpu_measurement_records_protocol() -> None:
    res = TorchCPULatency(**{**FAST.record(), "threads": 1}).measure_ms(tiny_net(), (1, 3, 16, 16), batch_size=2)
    assert res.kind == "measured" and res.model_name == "torch-cpu" and res.model == "torch-cpu"
    assert res.ms > 0 and res.cv is not None and res.cv >= 0 and res.iqr_ms is not None
    d = res.details
    assert d["runtime"] == "torch-eager-cpu" and d["threads"] == 1 and d["clock"] == "wall"
    assert d["batch_size"] == 2 and d["input_shape"] == [2, 3, 16, 16]
    assert d["runs"] >= 5 and "torch" in d["versions"] and "prunepilot" in d["versions"]
    assert d["protocol"]["warmup"] == FAST.warmup and "unstable" in d


def test_a_paired_round_times_briefly_and_leaves_the_device_model_as_it_was() -> None:
    full = TorchCPULatency(threads=1, warmup=5, min_runs=20, min_seconds=0.3, max_attempts=3, clock="thread")
    light = for_paired_rounds(full, 4)
    assert light is not full and full.protocol.min_runs == 20 and full.protocol.max_attempts == 3
    p = light.protocol  # type: ignore[attr-defined]
    assert (p.warmup, p.min_runs, p.max_runs, p.min_seconds, p.max_attempts) == (2, 4, 4, 0.0, 1)
    assert (p.clock, p.threads, p.seed) == ("thread", 1, full.protocol.seed)  # what is timed stays the same
    res = light.measure_ms(tiny_net(), (1, 3, 16, 16), batch_size=2)
    assert res.details["runs"] == 4 and res.details["attempts"] == 1
    assert for_paired_rounds(full, None) is full  # the full protocol every round
    onnx = OnnxRuntimeLatency()
    assert for_paired_rounds(onnx, 4).protocol.min_runs == 4  # type: ignore[attr-defined]


def test_repeatability_five_runs_report_cv() -> None:
    """Benchmark figure lives in bench/measure_repeatability.py; here: tolerant, fields present."""
    lm = TorchCPULatency(threads=1, warmup=2, min_runs=10, min_seconds=0.05, clock="thread")
    net = tiny_net(16)
    results = [lm.measure_ms(net, (1, 3, 32, 32)) for _ in range(5)]
    medians = [r.ms for r in results]
    assert all(r.cv is not None and r.cv >= 0 for r in results)
    assert all(r.details["clock"] == "thread" for r in results)
    assert max(medians) / min(medians) < 3.0  # shared CI machine: only rule out nonsense


def test_thread_clock_needs_one_thread() -> None:
    with pytest.raises(HardwareError, match="threads=1"):
        MeasureProtocol(threads=2, clock="thread")
    with pytest.raises(HardwareError, match="clock"):
        MeasureProtocol(clock="sundial")


def test_unknown_protocol_setting_is_named() -> None:
    with pytest.raises(HardwareError, match="accepted"):
        TorchCPULatency(warmups=3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA behaviour")
def test_cuda_unavailable_is_a_clear_error() -> None:
    with pytest.raises(HardwareError, match="CUDA is not available"):
        TorchCUDALatency(min_runs=3).measure_ms(tiny_net(), (1, 3, 8, 8))


def test_onnxruntime_measurement() -> None:
    lm = OnnxRuntimeLatency(exporter="legacy", **{**FAST.record(), "threads": 1})
    res = lm.measure_ms(tiny_net(), (1, 3, 16, 16))
    assert res.kind == "measured" and res.model_name == "onnxruntime-cpu" and res.ms > 0
    assert res.details["runtime"] == "onnxruntime-cpu" and "onnxruntime" in res.details["versions"]
    assert res.details["input_shape"] == [1, 3, 16, 16] and res.cv is not None


def test_predictor_on_built_model_reads_layers() -> None:
    from prunepilot.hw_models.proxies import MacsProxy

    res = MacsProxy().measure_ms(tiny_net(8), (1, 3, 16, 16))
    # conv 3->8 3x3 + depthwise 8 3x3 + pointwise 8->16 on 16x16, + linear 16->4
    expected = (16 * 16 * 8 * 27 + 16 * 16 * 8 * 9 + 16 * 16 * 16 * 8 + 16 * 4) / 1e6
    assert res.kind == "predicted" and res.ms == pytest.approx(expected) and res.details["unit"] == "MMACs"
