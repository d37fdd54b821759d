"""Lookup tables: exact on grid points, exact between them on a bilinear toy, JSON round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunepilot.errors import ConfigError
from prunepilot.hw_models.base import HardwareError
from prunepilot.hw_models.layer_trace import conv_shape, trace_layers
from prunepilot.hw_models.lut import LookupTable, LutEntry, LutLatency, layer_key, quantize
from prunepilot.hw_models.lut_profile import profile_model
from prunepilot.hw_models.testing import tiny_net


def toy_ms(cin: float, cout: float) -> float:
    return 0.01 * cin * cout + 0.2 * cin + 0.05 * cout + 1.0  # bilinear in (cin, cout)


def toy_entry(step: bool = False) -> LutEntry:
    cin, cout = [8, 16, 32, 64], [16, 32, 64]
    shape = conv_shape("x", 64, 64, 1, (3, 3), (1, 1), (8, 8), (8, 8))
    return LutEntry(
        key=layer_key(shape), kind="conv", kernel=(3, 3), stride=(1, 1), in_hw=(8, 8), out_hw=(8, 8), groups=1,
        tokens=64, cin=cin, cout=cout, ms=[[toy_ms(i, o) for o in cout] for i in cin], block=16, step=step,
    )  # fmt: skip


def test_exact_on_grid_points() -> None:
    e = toy_entry()
    for i in e.cin:
        for o in e.cout:
            assert e.lookup(i, o) == pytest.approx(toy_ms(i, o))


def test_exact_between_grid_points_on_bilinear_toy() -> None:
    e = toy_entry()
    for cin, cout in [(10, 20), (24, 48), (33, 17), (63, 63), (12.5, 40)]:
        assert e.lookup(cin, cout) == pytest.approx(toy_ms(cin, cout))
    # linear extrapolation outside the grid stays exact for a bilinear function
    assert e.lookup(4, 8) == pytest.approx(toy_ms(4, 8))


def test_step_mode_rounds_up_to_the_block() -> None:
    e = toy_entry(step=True)
    assert quantize(17, 16) == 32 and quantize(32, 16) == 32 and quantize(5, 1) == 5
    assert e.lookup(17, 33) == pytest.approx(toy_ms(32, 48))


def test_table_sums_layers_plus_overhead_and_round_trips(tmp_path: Path) -> None:
    e = toy_entry()
    table = LookupTable({e.key: e}, overhead_ms=0.5, batch_size=1, meta={"device": "toy", "model": "toy"})
    layers = [conv_shape(f"l{i}", c, c, 1, (3, 3), (1, 1), (8, 8), (8, 8)) for i, c in enumerate((16, 24))]
    expected = toy_ms(16, 16) + toy_ms(24, 24) + 0.5
    path = table.save(tmp_path / "lut.json")
    lm = LutLatency(path=path)
    res = lm.predict_layers(layers)
    assert res.kind == "predicted" and res.model_name == "lut" and res.ms == pytest.approx(expected)
    assert res.details["device"] == "toy"
    with pytest.raises(HardwareError, match="batch size 1"):
        lm.predict_layers(layers, batch_size=4)
    other = conv_shape("odd", 8, 8, 1, (5, 5), (1, 1), (8, 8), (8, 8))
    with pytest.raises(HardwareError, match="not in the lookup table.*prunepilot profile"):
        lm.predict_layers([other])


def test_calibrated_copy_fits_scale_and_overhead() -> None:
    e = toy_entry()
    lm = LutLatency(table=LookupTable({e.key: e}, overhead_ms=0.0, batch_size=1))
    samples = []
    for c in (16, 24, 40, 64):
        layers = [conv_shape("l", c, c, 1, (3, 3), (1, 1), (8, 8), (8, 8))]
        samples.append((layers, 1.5 * toy_ms(c, c) + 2.0))
    cal = lm.calibrate(samples)
    assert cal.table.scale == pytest.approx(1.5) and cal.table.overhead_ms == pytest.approx(2.0)
    assert lm.table.scale == 1.0  # the original is untouched


def test_bad_files_name_the_field(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text('{"format": "something-else"}')
    with pytest.raises(ConfigError, match="bad.json.*'format'"):
        LookupTable.load(p)
    p.write_text('{"format": "prunepilot.lut/v1", "entries": [{"key": 1}], "overhead_ms": 0, "batch_size": 1}')
    with pytest.raises(ConfigError, match=r"entries\[0\]"):
        LookupTable.load(p)
    with pytest.raises(ConfigError, match="not found"):
        LookupTable.load(tmp_path / "missing.json")


def test_profile_a_tiny_model(tmp_path: Path) -> None:
    net, shape = tiny_net(16), (1, 3, 16, 16)
    table = profile_model(
        net, shape, device="local-test", model_spec="tiny", fractions=(0.5, 1.0), extra_samples=2, progress=False,
        fit_ratios=(),
    )  # fmt: skip
    layers = trace_layers(net, shape)
    assert {layer_key(s) for s in layers} == set(table.entries)
    m = table.meta
    for key in ("device", "runtime", "versions", "threads", "grid_fractions", "channel_block", "input_shape"):
        assert key in m
    assert table.batch_size == 1 and m["threads"] == 1 and m["device"] == "local-test"
    # the full-width prediction reproduces the whole-model measurement the overhead was fitted on
    assert LutLatency(table=table).predict_layers(layers).ms == pytest.approx(m["model_measured_ms"])
    loaded = LookupTable.load(table.save(tmp_path / "t.json"))
    assert loaded.entries.keys() == table.entries.keys() and loaded.overhead_ms == table.overhead_ms


def test_profile_fits_scale_on_a_pruned_copy() -> None:
    # wide enough that halving the channels cuts the profiled time well beyond timing noise on a loaded machine
    net, shape = tiny_net(128), (1, 3, 32, 32)
    table = profile_model(net, shape, fractions=(0.25, 1.0), extra_samples=0, progress=False, clock="thread")
    points = table.meta["fit_points"]
    assert [p["keep_ratio"] for p in points] == [1.0, 0.5]
    assert points[1]["table_ms"] < points[0]["table_ms"] and table.scale > 0
