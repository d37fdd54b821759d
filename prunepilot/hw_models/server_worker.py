"""The measurement worker: the one process that loads, checks and times uploaded models.

The device server's HTTP process never loads a model. :class:`MeasureRunner` hands each job to
one long-lived worker (``python -m prunepilot.hw_models.server_worker``), one job at a time,
and kills it when a job runs past its limit; a fresh worker is started at once. A worker that
ran a TorchScript archive is never reused. The worker:

1. starts in an empty temporary working directory, with an environment holding no copy of the
   server's token, and with its stdout pointed at ``/dev/null`` (a model's prints go nowhere);
2. imports onnx, ONNX Runtime and torch and runs a tiny model of each format through the same
   code path as a job, then locks itself down with ``resource`` limits (no file can be opened any
   more, address space capped, no core dumps): see :mod:`prunepilot.hw_models.server_sandbox`;
3. reads jobs on stdin and writes answers on its original stdout as length-prefixed frames; it
   exits when stdin closes, and an alarm ends it if a job outlives its limit with nobody left
   to kill it (the server gone).

This is defence in depth, not a full sandbox (no seccomp, no namespaces): the format checks of
:mod:`prunepilot.hw_models.server_models` come first, these limits second. Unix only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from prunepilot.hw_models.server_models import MeasureJob, RequestError
from prunepilot.hw_models.server_sandbox import lock_down, warm_up

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
#: Largest answer frame the server reads from a worker (answers are a few kB of JSON).
_MAX_ANSWER = 1 << 24
#: Seconds past a job's limit before the server kills the worker (the upload's transfer, a
#: TorchScript run that cannot be stopped from inside).
KILL_GRACE_S = 1.0


@dataclass(frozen=True)
class WorkerLimits:
    """Limits of the measurement worker.

    Attributes:
        memory_mb: Address space the worker may add to its idle footprint (``RLIMIT_AS``), MB.
        startup_timeout_s: Seconds a new worker may take to import its runtimes and warm up.
    """

    memory_mb: int = 2048
    startup_timeout_s: float = 120.0


class WorkerError(Exception):
    """The worker died, timed out, or answered nonsense; the message is for the server's log."""


class WorkerTimeout(WorkerError):
    """The worker did not answer before the deadline (it is then killed)."""


# --- framing (both sides) -------------------------------------------------------------------------
def _write_all(fd: int, data: bytes, deadline: float | None) -> None:
    view = memoryview(data)
    while view:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise WorkerTimeout("timed out sending a job to the worker")
        try:
            n = os.write(fd, view[: 1 << 20])
        except BlockingIOError:
            continue
        except OSError as exc:
            raise WorkerError(f"the worker's pipe is closed ({exc})") from None
        view = view[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    """``n`` bytes, or ``None`` on end of file before the first byte."""
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise WorkerTimeout(f"no answer from the worker within the deadline ({len(buf)}/{n} bytes)")
        try:
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            if not buf:
                return None
            raise WorkerError(f"the worker's pipe closed after {len(buf)}/{n} bytes")
        buf.extend(chunk)
    return bytes(buf)


def write_frame(fd: int, *parts: bytes, deadline: float | None = None) -> None:
    """Send one length-prefixed frame made of ``parts``."""
    _write_all(fd, _HEADER.pack(sum(len(p) for p in parts)), deadline)
    for part in parts:
        _write_all(fd, part, deadline)


def read_frame(fd: int, deadline: float | None = None, limit: int | None = None) -> bytes | None:
    """Read one length-prefixed frame; ``None`` on a clean end of file."""
    head = _read_exact(fd, _HEADER.size, deadline)
    if head is None:
        return None
    (length,) = _HEADER.unpack(head)
    if limit is not None and length > limit:
        raise WorkerError(f"the worker sent a {length}-byte frame (limit {limit})")
    body = _read_exact(fd, length, deadline)
    if body is None:
        raise WorkerError("the worker's pipe closed before the frame's body")
    return body


# --- the server's side ----------------------------------------------------------------------------
class MeasureWorker:
    """One worker process, as the server sees it.

    Args:
        limits: Its memory and start-up limits.
        scrub: Secrets (the token): environment variables containing one are not passed on.
    """

    def __init__(self, limits: WorkerLimits, scrub: Sequence[str] = ()) -> None:
        self.limits = limits
        self.workdir = tempfile.mkdtemp(prefix="prunepilot-worker-")
        env = {k: v for k, v in os.environ.items() if not any(s and s in v for s in scrub)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, json.dumps(asdict(limits))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=self.workdir,
            env=env,
            close_fds=True,
            start_new_session=True,  # a Ctrl-C at the server's terminal is the server's to handle
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._jobs, self._answers = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self._jobs, False)
        os.set_blocking(self._answers, False)
        self.ready: dict[str, Any] | None = None

    def wait_ready(self) -> dict[str, Any]:
        """Wait for the worker's start-up report (its footprint, limits and versions)."""
        if self.ready is None:
            frame = self._read(time.monotonic() + self.limits.startup_timeout_s)
            self.ready = dict(json.loads(frame))
        return self.ready

    def run(self, job: MeasureJob, data: bytes, timeout_s: float) -> dict[str, Any]:
        """Send a job and wait for its answer; raises :class:`WorkerError` / :class:`WorkerTimeout`."""
        deadline = time.monotonic() + timeout_s
        head = json.dumps(asdict(job)).encode()
        write_frame(self._jobs, head, b"\n", data, deadline=deadline)
        return dict(json.loads(self._read(deadline)))

    def _read(self, deadline: float) -> bytes:
        frame = read_frame(self._answers, deadline, _MAX_ANSWER)
        if frame is None:
            code = self.proc.wait(timeout=5)
            raise WorkerError(f"the worker exited ({_exit_text(code)})")
        return frame

    def close(self) -> None:
        """Kill the worker (if alive) and remove its working directory."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            log.error("measurement worker %d did not exit after SIGKILL", self.proc.pid)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        shutil.rmtree(self.workdir, ignore_errors=True)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _FifoLock:
    """A lock granted in arrival order (``threading.Lock`` is not fair: under load a waiter can
    starve behind later arrivals)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()
        self._held = False

    def acquire(self, timeout: float | None = None) -> bool:
        me = object()
        with self._cond:
            self._waiting.append(me)
            granted = self._cond.wait_for(lambda: not self._held and self._waiting[0] is me, timeout)
            self._waiting.remove(me)
            if granted:
                self._held = True
            else:
                self._cond.notify_all()  # the next in line may be free to go now
            return granted

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class MeasureRunner:
    """One worker, one job at a time in arrival order; a killed, crashed or TorchScript-used worker
    is replaced at once.

    Args:
        limits: The workers' limits.
        scrub: Secrets kept out of the workers' environment.
    """

    def __init__(self, limits: WorkerLimits, scrub: Sequence[str] = ()) -> None:
        self.limits = limits
        self._scrub = tuple(scrub)
        self._lock = _FifoLock()
        self._worker: MeasureWorker | None = None
        self._closed = False

    def start(self) -> None:
        """Start a worker now (it warms up in the background) unless one is running."""
        with self._lock:
            self._current()

    def wait_ready(self) -> dict[str, Any]:
        """Start a worker if needed and wait for its start-up report."""
        with self._lock:
            return self._ready_worker().wait_ready()

    def _current(self) -> MeasureWorker:
        if self._closed:
            raise WorkerError("the measurement runner is closed")
        if self._worker is not None and self._worker.proc.poll() is not None:
            log.warning("measurement worker exited (%s); starting a new one", _exit_text(self._worker.proc.returncode))
            self._replace()
        if self._worker is None:
            self._worker = MeasureWorker(self.limits, self._scrub)
        return self._worker

    def _ready_worker(self) -> MeasureWorker:
        worker = self._current()
        try:
            worker.wait_ready()
        except WorkerError as exc:
            self._replace(start=False)
            raise WorkerError(f"the measurement worker did not start: {exc}") from None
        return worker

    def _replace(self, start: bool = True) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        if start and not self._closed:
            self._worker = MeasureWorker(self.limits, self._scrub)

    def run(
        self, job: MeasureJob, data: bytes, wait_s: float, wanted: Callable[[], bool] | None = None
    ) -> dict[str, Any]:
        """Run ``job`` on the worker, after the jobs that came before it (waiting ``wait_s`` at most).

        Returns the worker's answer (``status`` 200 with ``result``, or an error status). A job
        past its limit, or one that kills the worker, is answered with a RequestError(422).
        ``wanted`` is asked when the job's turn comes: a client that left is not measured.
        """
        if not self._lock.acquire(timeout=wait_s):
            raise RequestError(503, f"the server is busy measuring other models (waited {wait_s:g} s); retry later")
        try:
            if wanted is not None and not wanted():
                raise RequestError(408, "the client left before its measurement's turn")
            worker = self._ready_worker()
            try:
                answer = worker.run(job, data, job.limit_s + KILL_GRACE_S)
            except WorkerTimeout:
                log.warning("measurement ran past its %g s limit; killing the worker", job.limit_s)
                self._replace()
                raise RequestError(
                    422,
                    f"the model did not finish within the server's measurement limit of {job.limit_s:g} s "
                    "(its --measure-timeout); measure a smaller model or ask for a longer limit",
                ) from None
            except WorkerError as exc:
                log.warning("measurement worker failed: %s; starting a new one", exc)
                self._replace()
                raise RequestError(
                    422,
                    "the model crashed the measurement worker or exceeded its memory limit "
                    f"({self.limits.memory_mb} MB, the server's --worker-memory-mb)",
                ) from None
            if job.fmt == "torchscript":
                self._replace()  # never reuse a process that ran uploaded TorchScript
            return answer
        finally:
            self._lock.release()

    def close(self) -> None:
        """Kill the worker; the runner refuses jobs afterwards."""
        with self._lock:
            self._closed = True
            self._replace(start=False)


# --- the worker's side ----------------------------------------------------------------------------
def main() -> None:
    """The worker's loop: ``python -m prunepilot.hw_models.server_worker '<WorkerLimits JSON>'``."""
    limits = WorkerLimits(**json.loads(sys.argv[1]))
    answers = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)  # prints of a model (or a library) never reach the answer pipe
    os.close(devnull)
    from prunepilot.hw_models.server_models import run_job

    versions = warm_up()
    applied = lock_down(limits.memory_mb)
    write_frame(answers, json.dumps({"ready": True, "versions": versions, "limits": applied}).encode())
    while (frame := read_frame(0)) is not None:
        split = frame.index(b"\n")
        fields = json.loads(frame[:split])
        data = frame[split + 1 :]
        del frame
        shape = fields.pop("shape")
        job = MeasureJob(shape=None if shape is None else tuple(int(d) for d in shape), **fields)
        # the server kills a late worker; if the server itself is gone, SIGALRM's default action does
        signal.alarm(math.ceil(job.limit_s + 4 * KILL_GRACE_S))
        answer = run_job(job, data)
        signal.alarm(0)
        write_frame(answers, json.dumps(answer).encode())
    try:
        os.rmdir(os.getcwd())  # the server's temporary folder, if it could not remove it (killed)
    except OSError:
        pass


if __name__ == "__main__":
    main()
