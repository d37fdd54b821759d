"""``ApplyConfig``: everything ``prunepilot apply`` needs, as one validated, JSON-able record.

The CLI builds one from its flags; Python users build one directly. It is written to
``OUT/apply.json`` at the start of a run, which marks the folder as an apply output and lets
``--resume`` check that it continues the same job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prunepilot.apply.export import DEFAULT_TOLERANCE, parse_formats
from prunepilot.data import DataConfig
from prunepilot.errors import one_of
from prunepilot.training import DistillConfig, TrainConfig

#: Fields that may differ between a run and its ``--resume`` (they do not change the result).
RESUME_FREE_FIELDS = ("overwrite", "resume", "keep_checkpoints")

#: Criteria ``at_init`` accepts: the pruning-at-initialisation ones, and ``random`` (their control).
AT_INIT_CRITERIA = ("snip", "grasp", "synflow", "random")


class ApplyConfig(BaseModel):
    """How to apply a policy to a model, recover its accuracy, export and verify it."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    model: str
    """Model spec: zoo name, ``torchvision:NAME`` or ``pkg.module:fn`` (the production architecture)."""

    out: Path
    """Output folder: the pruned model (``pruned.json``, ``policy.json``, ``model.pt``), exports,
    ``checkpoints/`` and ``report.json``. Must not exist (or be empty) unless ``overwrite`` or ``resume``."""

    policy: Path | None = None
    """Policy JSON (``prunepilot pareto RUN --export policy.json``, ``prunepilot prune``'s output).
    Exactly one of ``policy`` and ``uniform``."""

    uniform: float | None = None
    """Instead of a policy file: keep this share of every group's channels, in (0, 1]
    (``prunepilot prune --uniform``), chosen by ``importance`` (default ``l1``)."""

    round_to: int = Field(default=1, ge=1)
    """With ``uniform``: round every group's width to a multiple of this (a policy file has its own)."""

    checkpoint: Path | None = None
    """Trained weights of the model (a state dict, loaded with ``weights_only=True``); None: random init."""

    data: DataConfig | None = None
    """Dataset for BN recalibration, fine-tuning and the accuracy report (test split). None: no
    accuracy, no recalibration and no fine-tuning (pruning, export and latency only)."""

    input_shape: tuple[int, ...] | None = None
    """Example input ``(N, C, H, W)``; None takes ``(1, *data.input_shape)``, or without data
    :func:`~prunepilot.models.default_input_shape` (224x224 for ``torchvision:``, else 32x32)."""

    num_classes: int = Field(default=10, gt=0)
    """Classes of the model head (taken from ``data`` when given)."""

    in_channels: int = Field(default=3, gt=0)
    """Input channels (taken from ``data`` when given)."""

    ignored_layers: tuple[str, ...] | None = None
    """Modules never to prune. None: the search run's (when the policy names a run folder that is
    still there), else none. They must match the search's for the signatures to match."""

    importance: str | None = None
    """Channel-selection criterion (a name of ``prunepilot.pruning.IMPORTANCE_CRITERIA``); None: the
    policy's. The applied policy records the criterion used."""

    reconstruct: bool = False
    """After pruning and BN recalibration, refit each consumer of pruned channels by least squares
    to the unpruned model's outputs on the calibration images, then recalibrate BN again (He et al.
    2017, ThiNet); before fine-tuning. Needs ``data``; one-shot only (``iterative`` 1)."""

    at_init: bool = False
    """Pruning at initialisation: prune a freshly initialised model of the architecture (seeded by
    ``train.seed``, no checkpoint) to the policy with ``importance`` (one of ``AT_INIT_CRITERIA``),
    scored on calibration images (``synflow``: data-free), then train it with ``train``."""

    by_ratio: bool = False
    """Apply the policy's keep ratios to a model of another group signature (a wider or narrower
    variant), matching groups by name, else by order when the counts match."""

    train: TrainConfig | None = None
    """Fine-tuning (optimizer, schedule, epochs, seed); None or ``epochs: 0``: no fine-tuning."""

    distill: DistillConfig | None = None
    """Logit distillation from the unpruned model during fine-tuning; None: cross-entropy only."""

    iterative: int = Field(default=1, ge=1)
    """Reach the policy in this many steps (linearly interpolated widths), fine-tuning ``train``'s
    epochs after each step; 1 is one-shot pruning."""

    train_device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to fine-tune; ``auto`` is CUDA when available. Mixed precision (bfloat16, else float16
    with loss scaling) and channels-last are used on CUDA only; on a CPU both are off."""

    keep_checkpoints: int | None = Field(default=3, gt=0)
    """Newest epoch states kept per fine-tuning stage in ``OUT/checkpoints/`` (None: all)."""

    export: tuple[str, ...] = ()
    """Formats to export and check: ``onnx``, ``torchscript``, ``exported-program``."""

    export_tolerance: float = Field(default=DEFAULT_TOLERANCE, gt=0)
    """Largest absolute output difference an export may have from the eager model."""

    onnx_exporter: Literal["dynamo", "legacy"] = "dynamo"
    """ONNX exporter: ``dynamo`` (``torch.onnx.export(dynamo=True)``, torch's default) or ``legacy``
    (TorchScript-based, faster, deprecated upstream)."""

    check_batch_size: int = Field(default=4, gt=0)
    """Batch size of the batch exports are checked on (test images when ``data`` is given)."""

    device: str | None = None
    """Latency device (name under ``configs/devices`` or YAML path). None: the search's device when
    its run folder is found, else ``local-cpu``."""

    latency_batch_size: int | None = Field(default=None, gt=0)
    """Latency batch size; None: the search's, else the device config's."""

    measure_latency: bool = True
    """Measure (or predict) latency of the base and the applied model on ``device``."""

    overwrite: bool = False
    """Replace an existing ``out`` folder, only if it holds an earlier apply or prune output."""

    resume: bool = False
    """Continue an interrupted run in ``out`` from its last epoch checkpoint (same config)."""

    @field_validator("export", mode="before")
    @classmethod
    def _formats(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        return parse_formats(value)

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (len(value) < 2 or any(s <= 0 for s in value)):
            raise ValueError(f"input_shape {value} must be positive sizes (N, C, H, W), e.g. (1, 3, 32, 32)")
        return value

    @field_validator("importance")
    @classmethod
    def _criterion(cls, value: str | None) -> str | None:
        from prunepilot.pruning import canonical_importance

        return canonical_importance(value) if value is not None else None

    @model_validator(mode="after")
    def _variants(self) -> ApplyConfig:
        if (self.policy is None) == (self.uniform is None):
            raise ValueError("give exactly one of --uniform RATIO or --policy POLICY.json (policy or uniform)")
        if self.uniform is not None and not 0 < self.uniform <= 1:
            raise ValueError(f"--uniform {self.uniform} is outside (0, 1]; it is the share of channels to KEEP")
        if self.uniform is not None and self.by_ratio:
            raise ValueError("--by-ratio adapts a policy file to another model; --uniform needs no adapting")
        if self.reconstruct and self.data is None:
            raise ValueError("reconstruct refits layers on calibration images: give data (--data NAME)")
        if self.reconstruct and self.iterative > 1:
            raise ValueError(f"reconstruct is one-shot: iterative must be 1, got {self.iterative}")
        if not self.at_init:
            return self
        if self.importance not in AT_INIT_CRITERIA:
            raise ValueError(
                f"at_init needs importance {one_of(AT_INIT_CRITERIA)} (pruning-at-initialisation criteria and "
                f"their random control), got {self.importance!r}; give --importance snip, for example"
            )
        if self.checkpoint is not None:
            raise ValueError(
                f"at_init prunes a freshly initialised model: drop the checkpoint {str(self.checkpoint)!r}"
            )
        if not self.fine_tunes() or self.data is None:
            raise ValueError("at_init trains the pruned model from scratch: give data and epochs (--data, --epochs N)")
        if self.distill is not None or self.iterative > 1:
            raise ValueError(
                f"at_init is one-shot and has no trained teacher: got distill {self.distill is not None} and "
                f"iterative {self.iterative}; drop --distill and use --iterative 1"
            )
        return self

    def fine_tunes(self) -> bool:
        """Whether any fine-tuning epochs are configured."""
        return self.train is not None and self.train.epochs > 0

    def resume_key(self) -> dict[str, Any]:
        """The config without the fields that may change on ``--resume``."""
        return self.model_dump(mode="json", exclude=set(RESUME_FREE_FIELDS))
