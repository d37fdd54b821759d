"""Train the benchmark bases once and commit them: zoo ResNet-20 and torchvision mobilenet_v2
(stem adapted to 1x28x28, stride 1) on Fashion-MNIST.

Recipe (the same for both, stated in each base's JSON):

* data: Fashion-MNIST's training split minus the 5,000 images held out with seed 0
  (``DataConfig(name="fashion-mnist", val_size=5000, seed=0)``, the split every benchmark scores
  candidates on), so 55,000 training images; the held-out images are never trained on. The test
  split is only evaluated at the end;
* augmentation: a random horizontal flip of half of each batch (seeded);
* SGD with Nesterov momentum 0.9, peak learning rate 0.1, cosine decay to 0 over all steps,
  weight decay 5e-4, batch 128, seed 0; ``--epochs`` per model (defaults below);
* one resumable training state per epoch in ``--state-dir`` (``--resume`` continues an
  interrupted run to the same result).

Writes ``bench/bases/<name>.pt`` (the state dict, :func:`prunepilot.models.save_checkpoint`) and
``bench/bases/<name>.json``: spec, recipe, epochs, held-out and test accuracy, seconds, machine,
versions and the checkpoint's sha256, which :func:`bench.bases.load.load_base` checks.

    python bench/bases/train.py --data-root PATH            # both, about 1.5 h on 2 idle cores
    python bench/bases/train.py --only resnet20 --resume    # one, continuing its last epoch
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.bases.load import BASES, BASES_DIR, DATA, file_sha256  # noqa: E402
from prunepilot import __version__  # noqa: E402
from prunepilot.data import build_data  # noqa: E402
from prunepilot.hw_models.measure import cpu_name  # noqa: E402
from prunepilot.models import build_model, save_checkpoint  # noqa: E402
from prunepilot.pruning import TORCH_PRUNING_VERSION  # noqa: E402
from prunepilot.training import TrainConfig, evaluate_accuracy, fit  # noqa: E402

#: epochs per base, chosen so that each reaches >= 92% test on this recipe
EPOCHS = {"resnet20": 12, "mobilenet_v2": 10}


class FlipLoader:
    """Wraps a training loader: each batch with half its images flipped left-right (seeded)."""

    def __init__(self, loader: Any, seed: int) -> None:
        self.loader = loader
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            flip = torch.rand(len(x), generator=self.gen) < 0.5
            x = x.clone()
            x[flip] = x[flip].flip(-1)
            yield x, y


def recipe(epochs: int, max_batches: int | None = None) -> TrainConfig:
    """The base recipe at ``epochs`` (``max_batches`` caps an epoch: smoke runs only)."""
    return TrainConfig(
        epochs=epochs,
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="cosine",
        seed=0,
        max_batches_per_epoch=max_batches,
    )


def train_one(
    name: str, epochs: int, state_dir: Path, resume: bool, out_dir: Path, max_batches: int | None = None
) -> dict[str, Any]:
    """Train base ``name`` and write its checkpoint and JSON; returns the JSON record."""
    spec = BASES[name]
    data = build_data(DATA)
    torch.manual_seed(0)
    model = build_model(spec, num_classes=data.num_classes, in_channels=data.input_shape[0])
    cfg = recipe(epochs, max_batches)
    start = time.time()
    history = fit(
        model,
        FlipLoader(data.train, seed=0),
        cfg,
        val_loader=data.val,
        checkpoint_dir=state_dir / name,
        resume=resume,
        keep_checkpoints=2,
        progress=sys.stdout.isatty(),
        description=name,
    )
    seconds = time.time() - start
    model.eval()
    test_acc = evaluate_accuracy(model, data.test)
    ckpt = out_dir / f"{name}.pt"
    save_checkpoint(model, ckpt)
    record = {
        "name": name,
        "spec": spec,
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "data": DATA.model_dump(mode="json", exclude={"root"}),
        "train_images": data.num_train,
        "recipe": {**cfg.model_dump(mode="json"), "batch_size": DATA.batch_size, "augmentation": "hflip p=0.5"},
        "epochs": epochs,
        "val_acc": history[-1]["val_acc"] if history else evaluate_accuracy(model, data.val),
        "test_acc": test_acc,
        "seconds": seconds,
        "seconds_note": "wall-clock of this process's training (epochs before a --resume counted in their records)",
        "history": history,
        "checkpoint": ckpt.name,
        "sha256": file_sha256(ckpt),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": {"prunepilot": __version__, "torch": torch.__version__, "torch_pruning": TORCH_PRUNING_VERSION},
    }
    (out_dir / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(BASES), action="append", help="train only these bases")
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs of every base trained")
    parser.add_argument("--data-root", type=Path, default=None, help="Fashion-MNIST root (else $PRUNEPILOT_DATA)")
    parser.add_argument("--state-dir", type=Path, default=Path(".cache/bases"), help="resumable training states")
    parser.add_argument("--resume", action="store_true", help="continue from the newest state in --state-dir")
    parser.add_argument("--out", type=Path, default=BASES_DIR, help="where the .pt and .json go")
    parser.add_argument("--max-batches", type=int, default=None, help="cap batches per epoch (smoke runs only)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.data_root is not None:
        os.environ["PRUNEPILOT_DATA"] = str(args.data_root)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(BASES):
        epochs = args.epochs or EPOCHS[name]
        print(f"training {name} ({BASES[name]}) for {epochs} epochs", flush=True)
        rec = train_one(name, epochs, args.state_dir, args.resume, args.out, args.max_batches)
        print(
            f"{name}: val {rec['val_acc']:.4f} test {rec['test_acc']:.4f} in {rec['seconds']:.0f} s; "
            f"sha256 {rec['sha256'][:12]}",
            flush=True,
        )


if __name__ == "__main__":
    main()
