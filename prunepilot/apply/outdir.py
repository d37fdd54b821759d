"""The output folder of ``prunepilot apply`` and ``prunepilot prune``: never clobber what is not ours.

* A new or empty folder is used as it is.
* An existing, non-empty folder is refused unless ``overwrite`` (then it is deleted and made
  anew) or ``resume`` (then it is continued). Even with ``overwrite``, only a folder that an
  earlier ``prunepilot apply`` or ``prunepilot prune`` wrote (it holds ``apply.json`` or
  ``pruned.json``) is deleted: a typo in ``--out`` never removes a user's files.
* The folder must be writable; this is checked before any work starts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from prunepilot.errors import ConfigError

CONFIG_FILE = "apply.json"
_MARKERS = (CONFIG_FILE, "pruned.json")


def prepare_out_dir(out: Path, *, overwrite: bool = False, resume: bool = False, resumable: bool = True) -> None:
    """Create (or, as allowed, clear) ``out`` and check that it is writable.

    Call it only once every input has loaded, so that a bad input leaves ``out`` as it was.
    ``resumable=False`` (no fine-tuning to resume, e.g. ``prunepilot prune``) leaves ``--resume`` out of the advice.

    Raises:
        ConfigError: ``out`` is occupied and neither flag allows it, ``overwrite`` would delete
            a folder prunepilot did not write, ``resume`` finds nothing to resume, or ``out``
            cannot be written (nothing is changed in any of these cases).
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file, not a folder; choose a folder path")
    occupied = out.is_dir() and any(out.iterdir())
    if resume:
        if not (out / CONFIG_FILE).is_file():
            raise ConfigError(
                f"--resume: {str(out)!r} holds no interrupted apply ({CONFIG_FILE} is missing); "
                "run without --resume to start"
            )
    elif occupied:
        if not overwrite:
            resume_hint = "--resume to continue an interrupted apply there, " if resumable else ""
            raise ConfigError(
                f"--out {str(out)!r} already exists and is not empty; pass --overwrite to replace it "
                f"(only a folder prunepilot apply or prune wrote), {resume_hint}or choose another folder "
                "(nothing was changed)"
            )
        if not any((out / marker).is_file() for marker in _MARKERS):
            raise ConfigError(
                f"--overwrite refuses to delete {str(out)!r}: it was not written by prunepilot apply or prune "
                f"(no {' or '.join(_MARKERS)}); choose another --out or empty it yourself (nothing was changed)"
            )
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {str(out)!r} is not writable: {exc.strerror or exc}") from None


def write_config(out: Path, record: dict[str, Any]) -> None:
    """Write ``apply.json`` (the config that produced this folder)."""
    (out / CONFIG_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")


def check_resume(out: Path, record: dict[str, Any]) -> None:
    """Refuse to resume a folder written under another config (lists the fields that differ)."""
    saved = json.loads((out / CONFIG_FILE).read_text())
    if saved == record:
        return
    keys = sorted(set(saved) | set(record))
    diffs = [f"{k}: was {saved.get(k)!r}, now {record.get(k)!r}" for k in keys if saved.get(k) != record.get(k)]
    raise ConfigError(
        f"--resume: {str(out)!r} was started with another config ({'; '.join(diffs[:8])}); resume with the same "
        "flags, or start over with --overwrite"
    )
