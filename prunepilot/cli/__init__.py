"""The ``prunepilot`` command line (typer). One module per command group."""

from __future__ import annotations

import typer

from prunepilot import __version__

app = typer.Typer(
    name="prunepilot",
    help="Latency-budgeted pruning-policy search for PyTorch models.",
    no_args_is_help=True,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"prunepilot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """prunepilot: search, compare and apply pruning policies under a latency budget."""


def _register_commands() -> None:
    from prunepilot.cli import apply, hw, init, prune, search

    init.register(app)
    prune.register(app)
    search.register(app)
    apply.register(app)
    hw.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    app()
