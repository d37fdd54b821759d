"""Scoring protocols: how a candidate's accuracy score is obtained (``evaluation.protocol``).

Every strategy is only as good as the score it optimises. A protocol turns a policy into one
number, always on the held-out split of the *training* data (never the test split):

* ``bn-recal``: prune, re-estimate batch-norm statistics on calibration batches, score. Cheap,
  and informative at mild pruning (EagleEye's adaptive BN); at 30-50% latency it can collapse
  towards chance for every candidate.
* ``short-finetune``: prune, recalibrate, then ``steps`` steps of logit distillation from the
  unpruned model on training batches (NetAdapt's short-term fine-tune), recalibrate, score. The
  batches are a function of the seed alone, so every candidate sees the same ones and the same
  policy always gets the same score.
* ``reconstruct``: prune, then refit every consumer of pruned channels by least squares on
  calibration activations so that its output matches the unpruned model's (ThiNet / He et al.
  2017, :mod:`prunepilot.pruning.reconstruct`), recalibrate batch norm, score. No training.
* ``head-refit``: prune, recalibrate batch norm, then refit the classifier (the final
  ``nn.Linear``, whose output is the model's output) in closed form by ridge least squares, so
  that on the calibration batches plus ``extra_batches`` fixed training batches the pruned
  model's logits match the unpruned model's. Pruning damages the features the old classifier
  reads; refitting it to the teacher's logits scores what the features still carry, which is
  what the fine-tune recovers. No training, one linear solve per candidate.
* ``supernet``: the candidate's weights are sliced from a slimmable supernet trained once per
  search (AutoSlim's sandwich rule with in-place distillation, :mod:`prunepilot.oneshot`),
  then its batch-norm statistics are recalibrated at the candidate's widths. The training is
  checkpointed (``<work_dir>/supernet.pt``) and resumes; its cost is reported by ``prepare``.

``auto`` (the default) is ``head-refit`` where the model's final ``nn.Linear`` is its output, else
``bn-recal`` (the reason is logged and kept in run.json): the choice of
``bench/proxy_correlation.py``, which ranks protocols by how well their score orders candidates by
their accuracy after the fine-tune, at the cost a search can pay (see BENCHMARKS.md).

A protocol is a small class registered under its name (:func:`register_protocol`); the
evaluator calls :meth:`ScoringProtocol.prepare` once and :meth:`ScoringProtocol.score` per
candidate, and every candidate record names the protocol that scored it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn
from torch.utils.data import Dataset

from prunepilot.errors import ConfigError, one_of
from prunepilot.oneshot.autoslim import SlimmableTraining
from prunepilot.pruning import PruningPolicy, PruningSpace, recalibrate_bn
from prunepilot.pruning.consumers import ridge_solve
from prunepilot.training import evaluate_accuracy
from prunepilot.training.distill import kd_loss

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ScoringData:
    """What a protocol may use. ``train`` is the training part only: never val, never test.

    Attributes:
        base: The unpruned model in eval mode (the distillation teacher; never modified).
        space: Its pruning space.
        example: An example input batch for tracing.
        calib: Batch-norm calibration batches (a subset of the training part).
        val: The held-out batches scores are computed on.
        train: The training part of the dataset (what training steps draw from).
        batch_size: Training batch size.
        importance: The search's channel criterion (the supernet's channel order).
        lower_bound: Smallest keep ratio of the search.
        round_to: Width rounding of the search.
        seed: The search's seed.
        work_dir: Folder for resumable state (the run folder); None keeps it in memory.
    """

    base: nn.Module
    space: PruningSpace
    example: torch.Tensor
    calib: Sequence[Batch]
    val: Sequence[Batch]
    train: Dataset[Any]
    batch_size: int
    importance: str
    lower_bound: float
    round_to: int
    seed: int
    work_dir: Path | None = None

    @classmethod
    def from_bundle(
        cls,
        bundle: Any,
        base: nn.Module,
        space: PruningSpace,
        *,
        calib: Sequence[Batch],
        val: Sequence[Batch],
        importance: str,
        lower_bound: float,
        round_to: int,
        seed: int,
        work_dir: Path | None = None,
    ) -> ScoringData:
        """From a :class:`~prunepilot.data.DataBundle`: training steps draw from its ``train``
        loader's dataset alone (the held-out and test splits are never handed over)."""
        loader = bundle.train
        return cls(
            base=base,
            space=space,
            example=bundle.example_inputs(1),
            calib=list(calib),
            val=list(val),
            train=loader.dataset,
            batch_size=int(loader.batch_size or 128),
            importance=importance,
            lower_bound=lower_bound,
            round_to=round_to,
            seed=seed,
            work_dir=work_dir,
        )


class ProtocolSettings(BaseModel):
    """Settings of a protocol (``evaluation.protocol_settings``); unknown keys are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ScoringProtocol(ABC):
    """One way of scoring a candidate. Subclass, set ``name`` and register."""

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    Settings: ClassVar[type[BaseModel]] = ProtocolSettings

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        try:
            self.settings = self.Settings.model_validate(dict(settings or {}))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            accepted = ", ".join(sorted(self.Settings.model_fields)) or "(none)"
            raise ConfigError(
                f"field 'evaluation.protocol_settings.{where}' of protocol {self.name!r}: {err['msg']}; "
                f"accepted settings: {accepted}"
            ) from None

    def prepare(self, data: ScoringData) -> dict[str, Any]:
        """One-off work before the first score (e.g. supernet training); returns its cost record."""
        return {}

    @abstractmethod
    def score(self, policy: PruningPolicy, prune: Callable[[], nn.Module], data: ScoringData) -> float:
        """The candidate's score; ``prune()`` returns a fresh pruned copy (not recalibrated)."""


_PROTOCOLS: dict[str, type[ScoringProtocol]] = {}


def register_protocol(cls: type[ScoringProtocol]) -> type[ScoringProtocol]:
    """Class decorator: register a protocol under ``cls.name``."""
    _PROTOCOLS[cls.name] = cls
    return cls


def protocol_names() -> list[str]:
    """Registered protocol names."""
    return sorted(_PROTOCOLS)


def get_protocol(name: str, settings: Mapping[str, Any] | None = None) -> ScoringProtocol:
    """An instance of protocol ``name``; the error lists the registered ones."""
    if name not in _PROTOCOLS:
        raise ConfigError(f"field 'evaluation.protocol': unknown protocol {name!r}; choose {one_of(protocol_names())}")
    return _PROTOCOLS[name](settings)


@register_protocol
class BNRecal(ScoringProtocol):
    """Prune, recalibrate batch norm, score (no training)."""

    name = "bn-recal"
    description = "batch-norm recalibration on calibration batches, no training (adaptive BN)"

    def score(self, policy: PruningPolicy, prune: Callable[[], nn.Module], data: ScoringData) -> float:
        model = prune()
        if data.calib:
            recalibrate_bn(model, data.calib)
        return float(evaluate_accuracy(model.eval(), data.val))


class ShortFinetuneSettings(ProtocolSettings):
    steps: int = Field(40, ge=1, description="Distillation steps per candidate (one training batch each).")
    lr: float = Field(0.01, gt=0, description="SGD learning rate (constant; Nesterov momentum 0.9).")
    batch_size: int | None = Field(None, ge=1, description="Batch size (None: the data config's).")
    temperature: float = Field(4.0, gt=0, description="Distillation temperature.")
    alpha: float = Field(0.9, ge=0, le=1, description="Weight of the distillation term (1 - alpha: labels).")


@register_protocol
class ShortFinetune(ScoringProtocol):
    """Prune, recalibrate, ``steps`` steps of distillation from the unpruned model, score."""

    name = "short-finetune"
    description = "a few steps of distillation from the unpruned model on training batches (NetAdapt)"
    Settings = ShortFinetuneSettings

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self._batches: list[tuple[Batch, torch.Tensor]] | None = None

    def training_batches(self, data: ScoringData) -> list[tuple[Batch, torch.Tensor]]:
        """The fixed ``(inputs, labels), teacher_logits`` of every step (drawn once per search)."""
        if self._batches is None:
            from prunepilot.oneshot.training import BatchStream

            s = self.settings
            assert isinstance(s, ShortFinetuneSettings)
            stream = BatchStream(data.train, s.batch_size or data.batch_size, data.seed)
            batches = []
            with torch.no_grad():
                for step in range(s.steps):
                    x, y = stream.batch(step)
                    batches.append(((x, y), data.base(x)))
            self._batches = batches
        return self._batches

    def prepare(self, data: ScoringData) -> dict[str, Any]:
        start = time.perf_counter()
        self.training_batches(data)
        return {"protocol": self.name, "prepare_seconds": time.perf_counter() - start}

    def score(self, policy: PruningPolicy, prune: Callable[[], nn.Module], data: ScoringData) -> float:
        s = self.settings
        assert isinstance(s, ShortFinetuneSettings)
        model = prune()
        if data.calib:
            recalibrate_bn(model, data.calib)
        params = list(model.parameters())
        for p in params:  # a copy: it trains even where the caller's base model is frozen
            p.requires_grad_(True)
        opt = torch.optim.SGD(params, lr=s.lr, momentum=0.9, nesterov=True)
        rng = torch.get_rng_state()
        torch.manual_seed(data.seed)  # dropout and the like: the same for every candidate
        try:
            model.train()
            for (x, y), teacher in self.training_batches(data):
                opt.zero_grad(set_to_none=True)
                loss = kd_loss(model(x), teacher, y, temperature=s.temperature, alpha=s.alpha)
                loss.backward()
                opt.step()
        finally:
            torch.set_rng_state(rng)
        model.eval()
        if data.calib:
            recalibrate_bn(model, data.calib)
        return float(evaluate_accuracy(model, data.val))


class SupernetSettings(SlimmableTraining):
    """The supernet's slimmable training (AutoSlim's sandwich rule, in-place distillation), once per search."""

    lr: float = Field(0.01, gt=0, description="Peak learning rate (SGD, cosine decay to 0 over `steps`).")
    checkpoint_every: int = Field(100, ge=1, description="Write a resumable checkpoint every this many steps.")


@register_protocol
class SupernetScore(ScoringProtocol):
    """Slice the candidate from a slimmable supernet trained once, recalibrate, score."""

    name = "supernet"
    description = "weights sliced from a slimmable supernet trained once per search (AutoSlim sandwich rule)"
    Settings = SupernetSettings

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.supernet: Any = None

    def prepare(self, data: ScoringData) -> dict[str, Any]:
        from prunepilot.oneshot.autoslim import train_slimmable
        from prunepilot.oneshot.supernet import Supernet
        from prunepilot.oneshot.training import BatchStream
        from prunepilot.oneshot.widths import WidthGrid

        s = self.settings
        assert isinstance(s, SupernetSettings)
        start = time.perf_counter()
        self.supernet = Supernet.build(
            data.base, data.example, space=data.space, importance=data.importance, calib_batches=list(data.calib)
        )
        grid = WidthGrid.from_space(data.space, data.lower_bound, data.round_to)
        stream = BatchStream(data.train, s.batch_size or data.batch_size, data.seed)
        ckpt = data.work_dir / "supernet.pt" if data.work_dir is not None else None
        result = train_slimmable(self.supernet, grid, stream, s, seed=data.seed, checkpoint=ckpt)
        self.supernet.model.eval()
        return {
            "protocol": self.name,
            "train_steps": result.steps,
            "resumed_from": result.resumed_from,
            "train_seconds": result.seconds,
            "prepare_seconds": time.perf_counter() - start,
            "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        }

    def score(self, policy: PruningPolicy, prune: Callable[[], nn.Module], data: ScoringData) -> float:
        if self.supernet is None:
            self.prepare(data)
        return float(self.supernet.score(policy.channels, list(data.calib), list(data.val)).accuracy)


@register_protocol
class Reconstruct(ScoringProtocol):
    """Prune, refit the pruned layers' consumers by least squares (calibration data), recalibrate, score."""

    name = "reconstruct"
    description = "least-squares reconstruction of the pruned layers' consumers on calibration batches (ThiNet)"

    def score(self, policy: PruningPolicy, prune: Callable[[], nn.Module], data: ScoringData) -> float:
        from prunepilot.pruning import apply_policy
        from prunepilot.pruning.reconstruct import reconstruct

        kept: dict[tuple[str, str], tuple[int, ...]] = {}
        model = apply_policy(data.base, policy, data.example, space=data.space, calib_batches=data.calib, kept=kept)
        if data.calib:
            reconstruct(model, data.base, data.calib, kept)  # recalibrates batch norm at its end
        return float(evaluate_accuracy(model.eval(), data.val))


class HeadRefitSettings(ProtocolSettings):
    extra_batches: int = Field(
        8, ge=0, description="Fixed training batches the classifier is refit on, beyond the calibration batches."
    )
    batch_size: int | None = Field(None, ge=1, description="Batch size of those batches (None: the data config's).")
    ridge: float = Field(
        1e-3, ge=0, description="Ridge term relative to the mean squared feature (0: plain least squares)."
    )
    target: Literal["logits", "labels"] = Field(
        "logits", description="What the classifier is refit to: the unpruned model's logits, or one-hot labels."
    )


def head_refit_unfit_reason(model: nn.Module, example: torch.Tensor) -> str | None:
    """Why ``head-refit`` cannot score ``model`` (None: it can): the model has no ``nn.Linear``,
    or its last one is followed by more computation (its output is not the model's), so refitting
    it to the unpruned model's logits is not defined."""
    return _find_head(model, example)[1]


def classifier_head(model: nn.Module, example: torch.Tensor) -> str:
    """Name of ``model``'s final ``nn.Linear`` whose output is the model's output.

    Raises:
        ConfigError: :func:`head_refit_unfit_reason` gives a reason; the message names it and the
            other protocols.
    """
    name, reason = _find_head(model, example)
    if reason is not None:
        others = one_of([n for n in protocol_names() if n != HeadRefit.name])
        raise ConfigError(f"protocol 'head-refit': {reason}; choose another protocol ({others})")
    assert name is not None
    return name


def _find_head(model: nn.Module, example: torch.Tensor) -> tuple[str | None, str | None]:
    """``(name of the final nn.Linear, None)`` where it is the model's output, else ``(None, reason)``."""
    linears = [name for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    kind = type(model).__name__
    if not linears:
        return None, f"model {kind} has no nn.Linear classifier to refit"
    name = linears[-1]
    got: list[torch.Tensor] = []
    hook = model.get_submodule(name).register_forward_hook(lambda _m, _i, out: got.append(out))
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(example)
    finally:
        hook.remove()
        model.train(was)
    if not got or not isinstance(out, torch.Tensor) or got[-1].shape != out.shape or not torch.equal(got[-1], out):
        return None, (
            f"the output of {kind}'s last nn.Linear ({name!r}) is not the model's output "
            "(something follows it), so it cannot be refit to the unpruned model's logits"
        )
    return name, None


def ridge_fit(xtx: torch.Tensor, xty: torch.Tensor, ridge: float, bias: bool) -> torch.Tensor:
    """Solve ``(X^T X + ridge * mean(diag) * I) W^T = X^T Y`` (the bias column, last, unshrunk).

    The mean is over features that are not constant zero, so channels zeroed rather than removed
    leave the solution for the others unchanged.
    """
    diag = xtx.diagonal()
    live = diag[:-1] if bias else diag
    live = live[live > 0]
    scale = float(live.mean()) if live.numel() else 1.0
    return ridge_solve(xtx, xty, ridge * scale, bias)


@register_protocol
class HeadRefit(ScoringProtocol):
    """Prune, recalibrate batch norm, refit the classifier to the unpruned model's logits, score."""

    name = "head-refit"
    description = "closed-form refit of the final nn.Linear to the unpruned model's logits (no training)"
    Settings = HeadRefitSettings

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self._fit: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._head: str | None = None

    def fit_batches(self, data: ScoringData) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The fixed ``(inputs, targets)`` the classifier is refit on: the calibration batches,
        then ``extra_batches`` training batches drawn from the seed (the training part only)."""
        if self._fit is None:
            from prunepilot.oneshot.training import BatchStream

            s = self.settings
            assert isinstance(s, HeadRefitSettings)
            batches = [(x, y) for x, y in data.calib]
            if s.extra_batches:
                stream = BatchStream(data.train, s.batch_size or data.batch_size, data.seed)
                batches += [stream.batch(step) for step in range(s.extra_batches)]
            fit = []
            with torch.no_grad():
                for x, y in batches:
                    logits = data.base(x)
                    target = logits if s.target == "logits" else nn.functional.one_hot(y, logits.shape[-1])
                    fit.append((x, target.reshape(-1, logits.shape[-1]).double()))
            self._fit = fit
        return self._fit

    def prepare(self, data: ScoringData) -> dict[str, Any]:
        start = time.perf_counter()
        self._head = classifier_head(data.base, data.example)
        self.fit_batches(data)
        return {"protocol": self.name, "head": self._head, "prepare_seconds": time.perf_counter() - start}

    def refit(self, model: nn.Module, data: ScoringData) -> Callable[[], None]:
        """Refit ``model``'s classifier in place (``model``: pruned or sliced, recalibrated, in
        eval mode); returns how to put the old weights back.

        The classifier is found by the base model's name for it; its input may be narrower than
        the base's (pruned features) and its weight wider than that input (a sliced layer runs on
        its leading columns): the leading columns are the ones refit.
        """
        s = self.settings
        assert isinstance(s, HeadRefitSettings)
        if self._head is None:
            self.prepare(data)
        assert self._head is not None
        head = model.get_submodule(self._head)
        weight, bias = head.weight, head.bias
        assert isinstance(weight, torch.Tensor)
        feats: list[torch.Tensor] = []
        hook = head.register_forward_hook(lambda _m, inp, _o: feats.append(inp[0].detach()))
        xtx = xty = None
        has_bias = isinstance(bias, torch.Tensor)
        try:
            with torch.no_grad():
                for x, target in self.fit_batches(data):
                    feats.clear()
                    model(x)
                    f = feats[-1].reshape(-1, feats[-1].shape[-1]).double()
                    if has_bias:
                        f = torch.cat([f, f.new_ones(f.shape[0], 1)], 1)
                    xtx = f.T @ f if xtx is None else xtx + f.T @ f
                    xty = f.T @ target if xty is None else xty + f.T @ target
        finally:
            hook.remove()
        assert xtx is not None and xty is not None
        new = ridge_fit(xtx, xty, s.ridge, has_bias)
        width = new.shape[1] - int(has_bias)
        old = (weight.detach().clone(), bias.detach().clone() if isinstance(bias, torch.Tensor) else None)

        def undo() -> None:
            with torch.no_grad():
                weight.copy_(old[0])
                if isinstance(bias, torch.Tensor) and old[1] is not None:
                    bias.copy_(old[1])

        if bool(torch.isfinite(new).all()):
            with torch.no_grad():
                weight[:, :width] = new[:, :width].to(weight.dtype)
                if isinstance(bias, torch.Tensor):
                    bias.copy_(new[:, -1].to(bias.dtype))
        return undo

    def score(self, policy: PruningPolicy, prune: Callable[[], nn.Module], data: ScoringData) -> float:
        model = prune()
        if data.calib:
            recalibrate_bn(model, data.calib)
        self.refit(model.eval(), data)
        return float(evaluate_accuracy(model, data.val))


#: ``evaluation.protocol: auto``: head-refit where the model allows it, else bn-recal.
AUTO = "auto"


def validate_protocol(name: str, settings: Mapping[str, Any] | None = None) -> None:
    """Check a configured protocol name and its settings (``auto``'s settings are head-refit's)."""
    if name != AUTO and name not in _PROTOCOLS:
        raise ConfigError(
            f"field 'evaluation.protocol': unknown protocol {name!r}; choose {one_of([AUTO, *protocol_names()])}"
        )
    get_protocol(HeadRefit.name if name == AUTO else name, settings)


def resolve_protocol(
    name: str, settings: Mapping[str, Any] | None, model: nn.Module, example: torch.Tensor
) -> tuple[ScoringProtocol, str | None]:
    """The protocol a search with ``evaluation.protocol: name`` scores by, and why ``auto`` fell
    back to bn-recal (None: it did not, or the protocol was named).

    Raises:
        ConfigError: an unknown protocol or setting, or ``head-refit`` named for a model whose last
            ``nn.Linear`` is not its output.
    """
    if name != AUTO:
        proto = get_protocol(name, settings)
        if proto.name == HeadRefit.name:
            classifier_head(model, example)
        return proto, None
    proto = get_protocol(HeadRefit.name, settings)
    reason = head_refit_unfit_reason(model, example)
    if reason is not None:
        return get_protocol(BNRecal.name), f"auto: head-refit does not fit this model ({reason}); bn-recal scores"
    return proto, None
