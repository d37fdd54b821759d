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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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
        seconds: Wall-clock limit in seconds.
        memory_gb: Limit on the growth of resident memory during the block, in GiB.
    """

    seconds: float = float(os.environ.get("PRUNEPILOT_GRAPH_MAX_SECONDS", 300))
    memory_gb: float = float(os.environ.get("PRUNEPILOT_GRAPH_MAX_GB", 6))


@contextmanager
def bounded(what: str, limits: Limits | None = None, poll: float = 0.05) -> Iterator[None]:
    """Run the ``with`` block under a time and memory watchdog.

    Only the main thread can be interrupted; elsewhere the limits are checked when the block
    ends (it still cannot exhaust time silently, but memory is not capped).

    Raises:
        GraphAnalysisError: the block exceeded a limit; the message names ``what`` and the limit.
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
            elif elapsed > limits.seconds:
                breach.append(f"took more than {limits.seconds:g} s")
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
    except KeyboardInterrupt:
        if breach:
            raise GraphAnalysisError(
                f"{what} stopped: it {breach[0]}. The model is too large or too unusual for "
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
