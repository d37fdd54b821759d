"""Named devices: a YAML under ``configs/devices/`` naming a device, its latency model and settings.

Example (``configs/devices/local-cpu.yaml``)::

    name: local-cpu
    description: This machine's CPU, torch eager, 1 thread
    latency_model: torch-cpu
    settings: {threads: 1}

``load_device("local-cpu")`` finds it in the device directories, searched in this order:
``$PRUNEPILOT_DEVICES`` (``os.pathsep``-separated), ``./configs/devices`` under the working
directory, the user's ``$XDG_CONFIG_HOME/prunepilot/devices`` (``~/.config/prunepilot/devices``),
and last the devices shipped inside the package (``prunepilot/configs/devices``, found with
:mod:`importlib.resources`, so an installed wheel has them); a path works too. Every shipped
roofline profile (:mod:`prunepilot.hw_models.roofline`) is also a device of the same name whose
latency model is ``roofline``. Files are validated on load: an error names the file and field.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from prunepilot.errors import ConfigError, one_of
from prunepilot.hw_models.base import LatencyModel
from prunepilot.hw_models.registry import get_latency_model, latency_model_names
from prunepilot.hw_models.roofline import load_profile, shipped_profiles, validation_message

#: Settings keys holding file paths; relative ones are resolved against the config's folder.
PATH_KEYS = ("path", "lut", "profile")


class DeviceConfig(BaseModel):
    """A named device and how prunepilot gets latency on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Device name used on the command line (`--device NAME`).")
    description: str = Field(default="", description="What the device is (chip, runtime, threads).")
    latency_model: str = Field(description="Registered latency model name, e.g. torch-cpu, lut, roofline, remote.")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Keyword settings passed to the latency model's constructor."
    )
    batch_size: int = Field(default=1, ge=1, description="Batch size latency is measured or predicted at.")
    profile: str | None = Field(
        default=None,
        description="Roofline profile (shipped name or YAML path) of this device's hardware, for "
        "`prunepilot calibrate` and hw-eval's roofline; default x86-avx2-core.",
    )
    source: str = Field(default="", description="File the config was loaded from (set by load_device).")

    @field_validator("latency_model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        names = latency_model_names()
        if v not in names:
            raise ValueError(f"unknown latency model {v!r}; choose {one_of(names)}")
        return v

    def build(self) -> LatencyModel:
        """The latency model this device config describes."""
        return get_latency_model(self.latency_model, **self.settings)


def shipped_config_dir() -> Path:
    """The example and device configs shipped inside the package (``prunepilot/configs``)."""
    return Path(str(importlib.resources.files("prunepilot") / "configs"))


def user_device_dir() -> Path:
    """The user's own device folder: ``$XDG_CONFIG_HOME/prunepilot/devices`` (default ``~/.config``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "prunepilot" / "devices"


def device_dirs() -> list[Path]:
    """Folders searched for device YAMLs, in order (the first file of a name wins)."""
    dirs = []
    env = os.environ.get("PRUNEPILOT_DEVICES")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(Path.cwd() / "configs" / "devices")
    dirs.append(user_device_dir())
    dirs.append(shipped_config_dir() / "devices")
    seen: list[Path] = []
    for d in dirs:
        if d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def _config_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for d in device_dirs():
        for p in sorted(d.glob("*.y*ml")) if d.is_dir() else []:
            files.setdefault(p.stem, p)
    return files


def _resolve_paths(settings: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(settings)
    for key in PATH_KEYS:
        v = out.get(key)
        if isinstance(v, str) and (v.endswith((".json", ".yaml", ".yml")) or "/" in v) and not Path(v).is_absolute():
            candidate = base / v
            if candidate.exists() or not Path(v).exists():
                out[key] = str(candidate)
    return out


def load_device_file(path: str | Path) -> DeviceConfig:
    """Load and validate one device YAML."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: device config not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: not readable YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a device config must be a mapping of fields, got {type(raw).__name__}")
    try:
        cfg = DeviceConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_message(p, exc)) from None
    update: dict[str, Any] = {"settings": _resolve_paths(cfg.settings, p.parent), "source": str(p)}
    if cfg.profile is not None:
        update["profile"] = _resolve_paths({"profile": cfg.profile}, p.parent)["profile"]
    return cfg.model_copy(update=update)


def load_device(name_or_path: str | Path) -> DeviceConfig:
    """A device by name (config folders, then shipped roofline profiles) or by YAML path.

    Raises:
        ConfigError: unknown name (lists the known devices) or an invalid file (names the field).
    """
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return load_device_file(p)
    name = str(name_or_path)
    files = _config_files()
    if name in files:
        return load_device_file(files[name])
    for path in files.values():  # a config whose `name:` differs from its file name
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(raw, dict) and raw.get("name") == name:
            return load_device_file(path)
    if name in shipped_profiles():
        return DeviceConfig(
            name=name,
            description=f"{load_profile(name).description.strip()} (uncalibrated roofline)",
            latency_model="roofline",
            settings={"profile": name},
            profile=name,
            source="(shipped profile)",
        )
    known = sorted(set(files) | set(shipped_profiles()))
    raise ConfigError(
        f"unknown device {name!r}; known devices are {one_of(known)}; add a YAML under "
        f"{user_device_dir()} (or a folder in $PRUNEPILOT_DEVICES) or pass a YAML path"
    )


def list_devices(errors: list[str] | None = None) -> list[DeviceConfig]:
    """Every device config found plus every shipped roofline profile not shadowed by a config.

    Invalid files are left out; their messages are appended to ``errors`` when given.
    """
    out: list[DeviceConfig] = []
    for _name, p in sorted(_config_files().items()):
        try:
            out.append(load_device_file(p))
        except ConfigError as exc:
            if errors is not None:
                errors.append(str(exc))
    have = {d.name for d in out}
    out += [load_device(n) for n in shipped_profiles() if n not in have]
    return out
