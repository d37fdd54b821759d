"""Device profiles and device configs are validated on load; errors name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prunepilot.errors import ConfigError
from prunepilot.hw_models.devices import list_devices, load_device
from prunepilot.hw_models.measure import TorchCPULatency
from prunepilot.hw_models.roofline import RooflineLatency, load_profile, shipped_profiles

REQUIRED = {"x86-avx2-core", "rpi4", "jetson-nano", "jetson-orin-nano", "a100", "h100"}

GOOD = {
    "name": "toy",
    "peak_flops": {"value": 1, "unit": "GFLOP/s", "source": "made up"},
    "memory_bandwidth": {"value": 2, "unit": "GB/s", "source": "made up"},
    "layer_overhead": {"value": 0, "unit": "us", "source": "made up"},
}


def write(tmp_path: Path, data: dict, name: str = "dev.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_shipped_profiles_load_with_sources() -> None:
    assert REQUIRED <= set(shipped_profiles())
    for name in REQUIRED:
        prof = load_profile(name)
        assert prof.peak > 0 and prof.bandwidth > 0
        for q in (prof.peak_flops, prof.memory_bandwidth, prof.layer_overhead):
            assert q.source.strip()


def test_profile_units_are_converted(tmp_path: Path) -> None:
    prof = load_profile(write(tmp_path, GOOD))
    assert prof.peak == 1e9 and prof.bandwidth == 2e9 and prof.layer_overhead_s == 0


def test_missing_field_names_file_and_field(tmp_path: Path) -> None:
    data = {k: v for k, v in GOOD.items() if k != "memory_bandwidth"}
    p = write(tmp_path, data)
    with pytest.raises(ConfigError) as exc:
        load_profile(p)
    assert str(p) in str(exc.value) and "memory_bandwidth" in str(exc.value) and "required" in str(exc.value)


def test_negative_bandwidth_names_file_and_field(tmp_path: Path) -> None:
    p = write(tmp_path, {**GOOD, "memory_bandwidth": {"value": -5, "unit": "GB/s", "source": "x"}})
    with pytest.raises(ConfigError) as exc:
        load_profile(p)
    assert str(p) in str(exc.value) and "memory_bandwidth.value" in str(exc.value)


def test_unknown_unit_names_file_field_and_accepted_units(tmp_path: Path) -> None:
    p = write(tmp_path, {**GOOD, "peak_flops": {"value": 1, "unit": "GFLOPS", "source": "x"}})
    with pytest.raises(ConfigError) as exc:
        load_profile(p)
    msg = str(exc.value)
    assert str(p) in msg and "peak_flops" in msg and "'GFLOPS'" in msg and "GFLOP/s" in msg


def test_missing_source_is_an_error(tmp_path: Path) -> None:
    p = write(tmp_path, {**GOOD, "layer_overhead": {"value": 1, "unit": "us"}})
    with pytest.raises(ConfigError, match=r"layer_overhead\.source"):
        load_profile(p)


def test_unknown_profile_name_lists_shipped() -> None:
    with pytest.raises(ConfigError, match="rpi4"):
        load_profile("pdp-11")


def test_device_config_builds_its_latency_model(tmp_path: Path) -> None:
    p = write(tmp_path, {"name": "cpu", "latency_model": "torch-cpu", "settings": {"threads": 1, "min_runs": 5}})
    dev = load_device(p)
    assert dev.name == "cpu" and dev.source == str(p)
    lm = dev.build()
    assert isinstance(lm, TorchCPULatency) and lm.protocol.min_runs == 5


def test_device_config_errors_name_file_and_field(tmp_path: Path) -> None:
    p = write(tmp_path, {"name": "cpu", "settings": {}})
    with pytest.raises(ConfigError) as exc:
        load_device(p)
    assert str(p) in str(exc.value) and "latency_model" in str(exc.value)
    p = write(tmp_path, {"name": "cpu", "latency_model": "abacus"}, "b.yaml")
    with pytest.raises(ConfigError, match="unknown latency model 'abacus'.*torch-cpu"):
        load_device(p)
    p = write(tmp_path, {"name": "cpu", "latency_model": "macs", "batch_size": 0}, "c.yaml")
    with pytest.raises(ConfigError, match="batch_size"):
        load_device(p)


def test_shipped_devices_and_profiles_are_listed() -> None:
    names = {d.name for d in list_devices()}
    assert {"local-cpu", "local-cpu-cputime", "remote-example"} <= names and REQUIRED <= names
    dev = load_device("jetson-nano")
    assert dev.latency_model == "roofline" and isinstance(dev.build(), RooflineLatency)
    with pytest.raises(ConfigError, match="known devices are"):
        load_device("no-such-device")
