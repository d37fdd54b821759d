"""The search configuration: one YAML file, validated by pydantic before Ray starts.

Every field is documented where it is declared; ``prunepilot search --help`` lists the CLI
overrides. :func:`load_config` reads a YAML file and applies overrides; errors name the field,
the bad value and what is accepted. The conversion to and from Ray Tune's ``param_space``
happens in exactly one place: :mod:`prunepilot.search.trainable`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prunepilot.data import DataConfig
from prunepilot.errors import ConfigError
from prunepilot.training import TrainConfig


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSection(_Strict):
    """Which model to prune."""

    spec: str = Field(description="Model spec: zoo name, `torchvision:NAME` or `pkg.module:fn`.")
    checkpoint: Path | None = Field(
        None,
        description="Trained weights (state dict, loaded with weights_only=True). "
        "If absent, a base model is trained with `train` and cached in `cache_dir`.",
    )
    ignored_layers: tuple[str, ...] = Field((), description="Module names never to prune.")
    train: TrainConfig | None = Field(
        None, description="Base training when no checkpoint is given (the demo uses this)."
    )
    cache_dir: Path = Field(Path(".cache/prunepilot"), description="Where trained base models are cached.")


class DeviceSection(_Strict):
    """Target device and how latency is obtained on it."""

    name: str = Field("local-cpu", description="Device name (configs/devices/NAME.yaml or a shipped profile).")
    latency_model: str | None = Field(
        None, description="Override the device's latency model (e.g. torch-cpu, roofline, lut, macs)."
    )
    batch_size: int | None = Field(
        None, gt=0, description="Batch size latency is measured/predicted at (default: the device config's)."
    )
    settings: dict[str, Any] = Field(default_factory=dict, description="Extra latency-model settings.")
    remeasure_with: str | None = Field(
        None,
        description="Measured latency model (e.g. torch-cpu, remote) used to re-measure front "
        "points whose latency was predicted; None skips re-measurement.",
    )


class BudgetSection(_Strict):
    """The latency budget: absolute milliseconds or a fraction of the base model's latency."""

    ms: float | None = Field(None, gt=0, description="Budget in milliseconds on the device.")
    fraction: float | None = Field(
        None, gt=0, le=1, description="Budget as a fraction of the base model's latency (0, 1]."
    )

    @model_validator(mode="after")
    def _one_of(self) -> BudgetSection:
        if (self.ms is None) == (self.fraction is None):
            raise ValueError("give exactly one of budget.ms or budget.fraction")
        return self


class EvaluationSection(_Strict):
    """How one candidate is scored."""

    importance: str = Field(
        "l1", description="Channel-selection criterion (l1, l2, bn-scale, taylor, hessian, random)."
    )
    round_to: int = Field(1, ge=1, description="Round group widths to multiples of this.")
    lower_bound: float = Field(0.1, gt=0, le=1, description="Smallest keep ratio a strategy may propose.")
    fit_points: int = Field(
        5,
        ge=2,
        description="Uniformly pruned models the driver measures to fit the budget-check latency "
        "predictor (measured devices only; 2 = the base and the lower bound).",
    )
    bn_batches: int = Field(8, ge=0, description="Calibration batches for BN recalibration (0 = off).")
    val_batches: int | None = Field(None, ge=1, description="Cap on held-out batches scored per candidate.")
    uniform_baseline: int = Field(
        5,
        ge=0,
        description="Uniform-pruning points the driver evaluates after the search, the curve "
        "every front is drawn against (baseline.jsonl; 0 = off; a `uniform` search needs none).",
    )
    remeasure_top: int = Field(
        5, ge=0, description="Front candidates with predicted latency to re-measure on the device."
    )


class StrategySection(_Strict):
    """The search strategy and its settings."""

    name: str = Field("random", description="Strategy name; `prunepilot strategies` lists them.")
    evaluations: int = Field(32, ge=1, description="Candidates to evaluate in total (per trial for agents).")
    trials: int = Field(1, ge=1, description="Tune trials for agent/one-shot strategies (budgets spread).")
    settings: dict[str, Any] = Field(default_factory=dict, description="Strategy-specific settings.")


class RaySection(_Strict):
    """Where and how trials run."""

    address: str | None = Field(None, description="Existing Ray cluster address; None starts a local Ray.")
    num_cpus: int = Field(2, ge=1, description="CPUs of the local Ray (ignored with an address).")
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs reserved per trial.")
    max_concurrent: int = Field(2, ge=1, description="Trials running at once.")
    max_failures: int = Field(0, ge=0, description="Retries of a failed trial before it is recorded failed.")
    reuse_actors: bool = Field(True, description="Reuse trial actors (0.1 s instead of ~1 s per trial).")
    torch_threads: int = Field(1, ge=1, description="torch threads inside each trial.")


class SearchConfig(_Strict):
    """A whole search: model, data, device, budget, strategy, evaluation and Ray settings."""

    name: str = Field("search", description="Run name, used in the default run folder.")
    seed: int = Field(0, description="Seed of everything random in the search.")
    model: ModelSection
    data: DataConfig
    device: DeviceSection = Field(default_factory=DeviceSection)
    budget: BudgetSection = Field(default_factory=lambda: BudgetSection(fraction=0.5))
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    strategy: StrategySection = Field(default_factory=StrategySection)
    ray: RaySection = Field(default_factory=RaySection)
    run_dir: Path | None = Field(None, description="Run folder; default runs/<name>-<timestamp>.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or "/" in v:
            raise ValueError(f"name {v!r} must be non-empty and contain no '/'")
        return v


Overrides = dict[str, Any]


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def validate_config(data: dict[str, Any], source: str = "config") -> SearchConfig:
    """Validate a plain dict; raises :class:`ConfigError` naming the field and accepted values."""
    try:
        cfg = SearchConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors()[:5]:
            where = ".".join(str(x) for x in err["loc"]) or "(top level)"
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"field {where!r}: {err['msg']}{shown}")
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None
    from prunepilot.search.strategies import check_strategy

    check_strategy(cfg.strategy.name, cfg.strategy.settings)
    return cfg


def load_config(path: str | Path, overrides: Overrides | None = None) -> SearchConfig:
    """Read a YAML config and apply dotted overrides (``{"strategy.name": "uniform"}``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; see configs/ for examples")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of fields, got {type(data).__name__}")
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(data, key, value)
    return validate_config(data, source=str(path))


def budget_override(text: str | None) -> Overrides:
    """Parse ``--budget``: ``12.5ms`` / ``12.5`` (milliseconds) or ``50%`` / ``0.5x`` (fraction)."""
    if text is None:
        return {}
    t = text.strip().lower()
    try:
        if t.endswith("%"):
            return {"budget": {"fraction": float(t[:-1]) / 100}}
        if t.endswith("x"):
            return {"budget": {"fraction": float(t[:-1])}}
        return {"budget": {"ms": float(t.removesuffix("ms"))}}
    except ValueError:
        raise ConfigError(
            f"--budget {text!r} is not understood; give milliseconds (12.5 or 12.5ms) or a fraction "
            "of the base latency (50% or 0.5x)"
        ) from None


Kind = Literal["measured", "predicted"]
