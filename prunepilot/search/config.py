"""The search configuration: one YAML file, validated by pydantic before Ray starts.

Every field is documented where it is declared; ``prunepilot search --help`` lists the CLI
overrides. :func:`load_config` reads a YAML file and applies overrides; errors name the field,
the bad value and what is accepted. The conversion to and from Ray Tune's ``param_space``
happens in exactly one place: :mod:`prunepilot.search.space`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from prunepilot.data import DataConfig
from prunepilot.errors import ConfigError
from prunepilot.training import TrainConfig


class _Strict(BaseModel):
    # allow_inf_nan=False: `inf`, `.inf`, `1e400` (which overflows to inf) and `nan` are refused
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


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

    name: str = Field(
        "local-cpu-cputime",
        description="Device name (configs/devices/NAME.yaml or a shipped profile); the default times this "
        "machine's CPU, 1 torch thread, on the thread-CPU clock (robust to other load; local-cpu: wall clock).",
    )
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
    also: tuple[str, ...] = Field(
        (),
        description="Other devices (names as for `name`) every candidate also gets a latency on: predicted "
        "ones from the widths, measured ones from an in-loop predictor calibrated at search start, their front "
        "points measured at the end (`prunepilot pareto RUN --device NAME`). Each device's budget is the same "
        "share of the base's latency there as the search's budget is on `name`. `random` and `optuna-tpe` (and "
        "`optuna-nsga2` with `project`) project each proposal into one device's budget with that device's "
        "latency estimate, the devices in turn (random: trial i aims at device i modulo their number, `name` "
        "first; Optuna: one drawn from the proposal), so every device's front gets candidates near its budget; "
        "the other strategies (agents, one-shot, knapsack, uniform) aim at `name` only. Candidates are judged "
        "(`budget_ms`, `front.json`, a sampler's score) on `name`. `latency_model` and `settings` apply to "
        "`name` alone, `batch_size` to every device.",
    )

    @field_validator("also")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        twice = sorted({n for n in v if v.count(n) > 1})
        if twice:
            raise ValueError(f"device.also names {twice} more than once; name each device once")
        return v

    @model_validator(mode="after")
    def _not_primary(self) -> DeviceSection:
        if self.name in self.also:
            raise ValueError(f"device.also names the search's own device {self.name!r}; list only other devices")
        return self


class BudgetSection(_Strict):
    """The latency budget: absolute milliseconds or a fraction of the base model's latency."""

    ms: float | None = Field(None, gt=0, description="Budget in milliseconds on the device (a finite number > 0).")
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
        "l1",
        description="Channel-selection criterion (l1, l2, bn-scale, taylor, hessian, random, grad-magnitude, "
        "snip, grasp, synflow, thinet).",
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
    fill_below: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Budget fill: when the best candidate within the budget uses less than this share of "
        "it (final latency / budget), the driver widens that policy toward full width until it uses the "
        "budget, times it as it times the final figures, scores it and keeps it as a candidate (strategy "
        "fill); the best stays the most accurate candidate within the budget. 0 = off.",
    )
    uniform_at_budget: bool = Field(
        True,
        description="After the search, the driver widens the all-lower-bound uniform policy as the budget "
        "fill widens the best (every group by the same keep ratio), times it the same way, scores the widest "
        "uniform policy within the budget and keeps it as a candidate (strategy uniform, trial "
        "uniform-at-budget): the pick is never a policy the search's own score ranks below uniform pruning "
        "at the budget. Skipped by the uniform strategy.",
    )
    in_loop_latency: Literal["predicted", "measured", "anchored"] = Field(
        "predicted",
        description="For measured devices: predicted from a predictor calibrated on the device when the "
        "search starts (candidates tagged predicted; every front point and the best candidate within the "
        "budget re-measured at the end, remeasure_top aside); measured per candidate; or anchored: "
        "every candidate measured in anchor_rounds rounds interleaved with the base model, its latency "
        "the median ratio times the base latency measured at search start (robust to load that drifts "
        "during the search; the predictor is still calibrated for budget checks and proposals).",
    )
    anchor_rounds: int = Field(
        3,
        ge=1,
        le=50,
        description="Paired timing (in_loop_latency anchored, remeasure_timing paired): interleaved "
        "base/candidate rounds per candidate.",
    )
    anchor_runs: int | None = Field(
        5,
        ge=3,
        le=1000,
        description="Paired timing: timed runs of each model per round (after two warm-up runs, one attempt); "
        "the median of the rounds' ratios is the figure, so a round needs no full protocol. None: the "
        "device's full measurement protocol every round (several times the cost).",
    )
    remeasure_timing: Literal["paired", "plain"] = Field(
        "paired",
        description="How a measured device times the final figures (front points and the best candidate "
        "re-measured, the budget fill): paired: in anchor_rounds rounds interleaved with the base model, "
        "the median ratio times the base latency measured at search start, so load that changed since "
        "the budget was set does not move them; plain: one timing of the candidate alone.",
    )
    in_loop_predictor: Literal["lut", "fit"] = Field(
        "lut",
        description="lut: a lookup table profiled for this model on this device at search start, scaled to "
        "the measured whole model (torch-cpu only; otherwise, or for a layer a table cannot hold, the fit); "
        "fit: the affine fit on MACs and bytes of uniformly pruned models.",
    )
    budget_margin: Annotated[float, Field(ge=0, le=1)] | Literal["auto"] = Field(
        "auto",
        description="Strategies aim at budget / (1 + margin), never below the predicted reachable minimum; "
        "auto: the in-loop predictor's largest under-prediction (measured / predicted - 1) on its "
        "calibration and check points, at most 0.25 (0 when latency is measured per candidate or the "
        "device predicts).",
    )
    protocol: str = Field(
        "auto",
        description="How a candidate's accuracy is scored (prunepilot/search/protocols.py): auto (the "
        "default: head-refit where the model's final nn.Linear is its output, else bn-recal), bn-recal "
        "(BN recalibration, no training), head-refit (BN recalibration, then the classifier refit in closed "
        "form to the unpruned model's logits), short-finetune (a few distillation steps from the unpruned "
        "model), reconstruct (least-squares refit of the pruned layers' consumers), supernet (sliced from a "
        "slimmable supernet trained once per search).",
    )
    protocol_settings: dict[str, Any] = Field(
        default_factory=dict, description="Settings of the protocol (e.g. {steps: 40} for short-finetune)."
    )
    scoring: Literal["slice", "prune"] = Field(
        "slice",
        description="How bn-recal and head-refit score a candidate: slice the leading channels of a "
        "once-reordered copy (fast) or prune a copy with Torch-Pruning (the apply path); models the slicer "
        "cannot represent fall back to prune. Both give the same accuracy.",
    )
    depth: bool = Field(
        False,
        description="Also search depth: the random and Optuna strategies propose, per removable residual block "
        "of the model (PruningSpace.blocks), whether to replace it by an identity, besides the keep ratios; "
        "budget projection then shrinks widths with the blocks fixed. Needs a model with such blocks (ResNets, "
        "MobileNetV2, ...) and a strategy that searches depth (random, optuna-tpe, optuna-nsga2); the uniform "
        "baseline stays width-only. Candidates that remove blocks are stored as prunepilot.policy/v2.",
    )

    @field_validator("importance")
    @classmethod
    def _known_importance(cls, v: str) -> str:
        from prunepilot.pruning import canonical_importance

        canonical_importance(v)  # raises ValueError listing the criteria; the name is kept as given
        return v

    @model_validator(mode="after")
    def _known_protocol(self) -> EvaluationSection:
        from prunepilot.search.protocols import validate_protocol

        try:
            validate_protocol(self.protocol, self.protocol_settings)  # validates name and settings only
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("field 'evaluation.protocol': ")) from None
        return self


class StrategySection(_Strict):
    """The search strategy and its settings."""

    name: str = Field("random", description="Strategy name; `prunepilot strategies` lists them.")
    evaluations: int = Field(32, ge=1, description="Candidates to evaluate in total (per trial for agents).")
    trials: int = Field(1, ge=1, description="Tune trials for agent/one-shot strategies (budgets spread).")
    settings: dict[str, Any] = Field(default_factory=dict, description="Strategy-specific settings.")
    time_limit_s: float | None = Field(
        None,
        gt=0,
        description="Wall-clock limit on the trials, in seconds (None: `evaluations` only). No trial starts "
        "after it; on Ray, Tune's `time_budget_s` also stops the trials still running. Every candidate "
        "reported before the limit is kept.",
    )


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
    """Validate a plain dict; raises :class:`ConfigError` naming the field and accepted values.

    Besides the fields' own checks, the strategy (name and settings), the device and the latency
    model names are looked up here, so a bad name is refused before any model, data or Ray.
    """
    try:
        cfg = SearchConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_error_line(err) for err in exc.errors()[:5]]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None
    from prunepilot.search.strategies import check_depth, check_strategy

    check_strategy(cfg.strategy.name, cfg.strategy.settings)
    check_depth(cfg.strategy.name, cfg.evaluation.depth)
    _check_device(cfg, source)
    return cfg


def no_blocks_reason(spec: str) -> str:
    """Why ``evaluation.depth: true`` is refused for model ``spec`` (it has no removable blocks)."""
    return (
        f"true, but model {spec!r} has no removable residual blocks, and depth search needs residual blocks "
        "(it removes whole ones: e.g. resnet20, mobilenetv2, torchvision:resnet18); set evaluation.depth: "
        "false or choose a residual model"
    )


def _check_device(cfg: SearchConfig, source: str) -> None:
    """Look up ``device.name``, ``device.also`` and the latency model names (cheap: YAML files and a registry)."""
    from prunepilot.hw_models.devices import load_device
    from prunepilot.hw_models.registry import latency_model_class

    checks: list[tuple[str, Callable[[str], object], str]] = [("device.name", load_device, cfg.device.name)]
    checks += [("device.also", load_device, name) for name in cfg.device.also]
    checks += [
        (f"device.{key}", latency_model_class, name)
        for key, name in (("latency_model", cfg.device.latency_model), ("remeasure_with", cfg.device.remeasure_with))
        if name is not None
    ]
    for where, look_up, name in checks:
        try:
            look_up(name)
        except ConfigError as exc:
            raise ConfigError(f"{source}: field {where!r}: {exc}") from None


def _error_line(err: ErrorDetails) -> str:
    """One pydantic error as ``field 'a.b': what is wrong (got X); what is accepted``."""
    loc = tuple(err["loc"])
    where = ".".join(str(x) for x in loc) or "(top level)"
    section, field = _section_of(loc)
    if err["type"] == "extra_forbidden":
        accepted = list(section.model_fields) if section is not None else []
        close = difflib.get_close_matches(str(loc[-1]), accepted, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        owner = ".".join(str(x) for x in loc[:-1]) or "the top level"
        return f"unknown field {where!r}{hint}; accepted fields of {owner}: {', '.join(accepted) or '(none)'}"
    got = err.get("input")
    msg = str(err["msg"]).removeprefix("Value error, ")
    shown = "" if isinstance(got, dict) or repr(got) in msg else f" (got {got!r})"
    described = section.model_fields[field].description if section is not None and field else None
    return f"field {where!r}: {msg}{shown}" + (f"; {' '.join(described.split())}" if described else "")


def _section_of(loc: tuple[int | str, ...]) -> tuple[type[BaseModel] | None, str | None]:
    """The pydantic model that declares (or would declare) the field at ``loc``, and its name."""
    model: type[BaseModel] | None = SearchConfig
    for part in loc[:-1]:
        info = model.model_fields.get(str(part)) if model is not None else None
        if info is None:
            return None, None
        candidates = (info.annotation, *get_args(info.annotation))
        model = next((t for t in candidates if isinstance(t, type) and issubclass(t, BaseModel)), None)
    if model is None or not loc:
        return model, None
    name = str(loc[-1])
    return model, name if name in model.model_fields else None


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
    key, number, per = "ms", t.removesuffix("ms"), 1.0
    if t.endswith("%"):
        key, number, per = "fraction", t[:-1], 100.0
    elif t.endswith("x"):
        key, number = "fraction", t[:-1]
    try:
        value = float(number) / per
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(
            f"--budget {text!r} is not understood; give finite milliseconds (12.5 or 12.5ms) or a fraction "
            "of the base latency (50% or 0.5x)"
        )
    return {"budget": {key: value}}


Kind = Literal["measured", "predicted"]
