"""Bounded execution for graph analysis: a wall-clock and memory watchdog.

Torch-Pruning's dependency-graph build is plain Python and can, on some models, run for a
very long time or allocate more than 10 GB. :func:`bounded` runs a block under a watchdog
thread that interrupts the main thread when the block exceeds its time or resident-memory
growth limit, and turns that into a :class:`~prunepilot.errors.GraphAnalysisError` naming
the limit, instead of letting the machine run out of memory.
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from prunepilot.errors import GraphAnalysisError

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident memory of this process in bytes (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True)
class Limits:
    """Limits for one bounded block.

    Attributes:
        seconds: Wall-clock limit in seconds (default 30, or ``$PRUNEPILOT_GRAPH_MAX_SECONDS``):
            the time by which the block has finished or been refused. The watchdog stops the block
            :func:`stop_allowance` earlier, so that unwinding it and composing the error fit too.
        memory_gb: Limit on the growth of resident memory during the block, in GiB (default 4,
            or ``$PRUNEPILOT_GRAPH_MAX_GB``).
    """

    seconds: float = float(os.environ.get("PRUNEPILOT_GRAPH_MAX_SECONDS", 30))
    memory_gb: float = float(os.environ.get("PRUNEPILOT_GRAPH_MAX_GB", 4))


def stop_allowance(seconds: float) -> float:
    """How long before a time limit of ``seconds`` the watchdog stops a block: 5% of the limit,
    at most 0.5 s (stopping, unwinding and naming the module take ~0.1 s on a large model)."""
    return min(0.5, 0.05 * seconds)


Locator = Callable[[TracebackType | None], str | None]


def locate_in(tb: TracebackType | None, names: Mapping[Any, str]) -> str | None:
    """The module, or else operation, that the innermost frame of ``tb`` naming one was given.

    Reads each frame's *arguments* (what a function works on, not its scratch variables): a
    module or parameter in ``names`` (the model itself, named ``""``, does not count), a graph
    node or dependency holding one (``.module``, ``.target.module``), or else a graph node of an
    autograd operation (``.grad_fn``). Returns e.g. ``"module 'features.3' (ShuffleBlock)"`` or
    ``"operation ViewBackward0"``, or None.
    """
    found: str | None = None
    while tb is not None:
        code, local = tb.tb_frame.f_code, tb.tb_frame.f_locals
        args = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        named = [d for a in args if (d := _describe(local.get(a), names))]
        if named:
            found = min(named, key=lambda d: not d.startswith("module"))  # a module over an operation
        tb = tb.tb_next
    return found


def _describe(value: Any, names: Mapping[Any, str]) -> str | None:
    try:
        for obj in (value, getattr(value, "module", None), getattr(getattr(value, "target", None), "module", None)):
            if isinstance(obj, Hashable) and (name := names.get(obj)):
                return f"module {name!r} ({type(obj).__name__})"
        op = getattr(getattr(value, "grad_fn", None), "name", None) if hasattr(value, "module") else None
        return f"operation {op()}" if callable(op) else None
    except Exception:  # noqa: BLE001 - an argument that cannot be inspected names nothing
        return None


def _interrupt_of(exc: BaseException) -> BaseException:
    """The watchdog's KeyboardInterrupt in ``exc``'s chain of causes and contexts (else ``exc``)."""
    seen: list[BaseException | None] = [exc]
    while seen:
        e = seen.pop()
        if isinstance(e, KeyboardInterrupt):
            return e
        if e is not None:
            seen += [e.__cause__, e.__context__]
    return exc


@contextmanager
def bounded(
    what: str, limits: Limits | None = None, poll: float = 0.05, locate: Locator | None = None
) -> Iterator[None]:
    """Run the ``with`` block under a time and memory watchdog.

    Only the main thread can be interrupted; elsewhere the limits are checked when the block
    ends (it still cannot exhaust time silently, but memory is not capped).

    Args:
        what: What the block does, for the error message.
        limits: The limits (default :class:`Limits`).
        poll: Seconds between the watchdog's checks.
        locate: Names where the block was when it was stopped, from the traceback
            (e.g. ``lambda tb: locate_in(tb, names)``).

    Raises:
        GraphAnalysisError: the block exceeded a limit; the message names ``what``, the limit
            and, with ``locate``, the module or operation it was at.
    """
    limits = limits or Limits()
    start_rss = rss_bytes()
    start = time.monotonic()
    breach: list[str] = []
    done = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()

    def watch() -> None:
        while not done.wait(poll):
            grown = (rss_bytes() - start_rss) / 2**30
            elapsed = time.monotonic() - start
            if grown > limits.memory_gb:
                breach.append(f"memory grew by {grown:.1f} GiB (limit {limits.memory_gb:g} GiB)")
            elif elapsed > limits.seconds - stop_allowance(limits.seconds):
                breach.append(f"reached its time limit of {limits.seconds:g} s")
            if breach:
                _thread.interrupt_main()
                return

    def on_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    watcher = threading.Thread(target=watch, name="prunepilot-guard", daemon=True)
    previous: object = None
    if in_main:
        # interrupt_main() runs the *installed* SIGINT handler; libraries (Ray Tune) may leave
        # their own installed, so ours raises KeyboardInterrupt for the duration of the block.
        previous = signal.signal(signal.SIGINT, on_interrupt)
        watcher.start()
    try:
        yield
    except BaseException as exc:  # code in the block may swallow the interrupt and raise another error
        if breach:
            where = locate(_interrupt_of(exc).__traceback__) if locate else None
            at = f" at {where}" if where else ""
            raise GraphAnalysisError(
                f"{what} stopped{at}: it {breach[0]}. The model is too large or too unusual for "
                "Torch-Pruning's graph analysis at this input size; try a smaller example input, "
                "list the offending blocks in ignored_layers, or raise PRUNEPILOT_GRAPH_MAX_GB / "
                "PRUNEPILOT_GRAPH_MAX_SECONDS."
            ) from None
        raise
    finally:
        done.set()
        if in_main:
            watcher.join()
            signal.signal(signal.SIGINT, previous)  # type: ignore[arg-type]
    if not in_main and time.monotonic() - start > limits.seconds:
        raise GraphAnalysisError(f"{what} took more than {limits.seconds:g} s")
