"""Shared CLI plumbing: turning prunepilot errors into one clear line and exit code 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from prunepilot.errors import ConfigError, PrunepilotError

err_console = Console(stderr=True)

DEFAULT_SHAPE_HELP = "1,C,224,224 for torchvision:NAME, else 1,C,32,32"
"""How ``--input-shape`` defaults without data (:func:`prunepilot.models.default_input_shape`), for help texts."""


@contextmanager
def fail_on_error() -> Iterator[None]:
    """Print a :class:`PrunepilotError` as one red line (no traceback) and exit with code 2."""
    try:
        yield
    except PrunepilotError as exc:
        # escaped: a message quoting user input such as "[g]" must print as it is, not as markup
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None


def parse_shape(text: str, flag: str = "--input-shape") -> tuple[int, ...]:
    """Parse ``1,3,32,32`` (or ``1x3x32x32``) into a shape tuple, or raise naming the flag.

    Every part must be a positive integer: ``1,3,x`` or ``1,3,,32`` are refused, not shortened.
    """
    parts = [p.strip() for p in text.strip().split("," if "," in text else "x")]
    bad = [p for p in parts if not (p.isascii() and p.isdigit() and int(p) > 0)]
    if bad or len(parts) < 2:
        what = f"{bad[0]!r} is not a positive integer" if bad else "a shape needs at least 2 sizes"
        raise ConfigError(
            f"{flag} {text!r} is not a shape ({what}); give positive integer sizes like 1,3,32,32 (N,C,H,W)"
        )
    return tuple(int(p) for p in parts)
