"""``prunepilot init [DIR]``: write a commented starter search config.

The starter (``prunepilot/configs/starter.yaml``, shipped in the package) runs offline as it is
(digits, the built-in simplecnn, this machine's CPU) and says in comments what to change for a
user's own model, data and device. An existing file is never replaced unless ``--force``.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from prunepilot.cli.common import fail_on_error
from prunepilot.errors import ConfigError

console = Console()

STARTER = "starter.yaml"
DEFAULT_NAME = "prunepilot.yaml"


def register(app: typer.Typer) -> None:
    """Add ``init`` to ``app``."""
    app.command("init")(init)


def write_starter(folder: Path, name: str = DEFAULT_NAME, force: bool = False) -> Path:
    """Write the starter config as ``folder/name`` and return its path.

    Raises:
        ConfigError: the file exists (and ``force`` is not set), ``folder`` is a file, or the
            name is not a plain ``.yaml`` file name.
    """
    from prunepilot.hw_models.devices import shipped_config_dir

    if Path(name).name != name or not name.endswith((".yaml", ".yml")):
        raise ConfigError(f"--name {name!r} must be a plain file name ending in .yaml, like {DEFAULT_NAME}")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{str(folder)!r} is a file, not a folder; give the folder to write {name} into")
    target = folder / name
    if target.exists() and not force:
        raise ConfigError(
            f"{str(target)!r} already exists; pass --force to replace it, or --name OTHER.yaml (nothing was changed)"
        )
    text = (shipped_config_dir() / STARTER).read_text()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    return target


def init(
    folder: Path = typer.Argument(Path("."), help="Folder to write the config into (created if missing)."),
    name: str = typer.Option(DEFAULT_NAME, "--name", help="File name of the config."),
    force: bool = typer.Option(False, "--force", help="Replace an existing file of that name."),
) -> None:
    """Write a commented starter search config (runs offline as it is; edit it for your model)."""
    with fail_on_error():
        target = write_starter(folder, name, force)
    console.print(f"wrote {target}")
    console.print(f"next: prunepilot search {target} --run-dir runs/first")
