"""``ApplyConfig``: everything ``prunepilot apply`` needs, as one validated, JSON-able record.

The CLI builds one from its flags; Python users build one directly. It is written to
``OUT/apply.json`` at the start of a run, which marks the folder as an apply output and lets
``--resume`` check that it continues the same job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prunepilot.apply.export import DEFAULT_TOLERANCE, parse_formats
from prunepilot.data import DataConfig
from prunepilot.training import DistillConfig, TrainConfig

#: Fields that may differ between a run and its ``--resume`` (they do not change the result).
RESUME_FREE_FIELDS = ("overwrite", "resume", "keep_checkpoints")


class ApplyConfig(BaseModel):
    """How to apply a policy to a model, recover its accuracy, export and verify it."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    policy: Path
    """Policy JSON (``prunepilot pareto RUN --export policy.json``, ``prunepilot prune``'s output)."""

    model: str
    """Model spec: zoo name, ``torchvision:NAME`` or ``pkg.module:fn`` (the production architecture)."""

    out: Path
    """Output folder: the pruned model (``pruned.json``, ``policy.json``, ``model.pt``), exports,
    ``checkpoints/`` and ``report.json``. Must not exist (or be empty) unless ``overwrite`` or ``resume``."""

    checkpoint: Path | None = None
    """Trained weights of the model (a state dict, loaded with ``weights_only=True``); None: random init."""

    data: DataConfig | None = None
    """Dataset for BN recalibration, fine-tuning and the accuracy report (test split). None: no
    accuracy, no recalibration and no fine-tuning (pruning, export and latency only)."""

    input_shape: tuple[int, ...] | None = None
    """Example input ``(N, C, H, W)``; None takes ``(1, *data.input_shape)``."""

    num_classes: int = Field(default=10, gt=0)
    """Classes of the model head (taken from ``data`` when given)."""

    in_channels: int = Field(default=3, gt=0)
    """Input channels (taken from ``data`` when given)."""

    ignored_layers: tuple[str, ...] | None = None
    """Modules never to prune. None: the search run's (when the policy names a run folder that is
    still there), else none. They must match the search's for the signatures to match."""

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

    def fine_tunes(self) -> bool:
        """Whether any fine-tuning epochs are configured."""
        return self.train is not None and self.train.epochs > 0

    def resume_key(self) -> dict[str, Any]:
        """The config without the fields that may change on ``--resume``."""
        return self.model_dump(mode="json", exclude=set(RESUME_FREE_FIELDS))
