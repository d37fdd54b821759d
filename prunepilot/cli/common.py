"""Shared CLI plumbing: turning prunepilot errors into one clear line and exit code 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from prunepilot.errors import ConfigError, PrunepilotError

err_console = Console(stderr=True)


@contextmanager
def fail_on_error() -> Iterator[None]:
    """Print a :class:`PrunepilotError` as one red line (no traceback) and exit with code 2."""
    try:
        yield
    except PrunepilotError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None


def parse_shape(text: str, flag: str = "--input-shape") -> tuple[int, ...]:
    """Parse ``1,3,32,32`` into a shape tuple, or raise naming the flag."""
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        shape = ()
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ConfigError(f"{flag} {text!r} is not a shape; give positive sizes like 1,3,32,32")
    return shape
