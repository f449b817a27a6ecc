"""What the stdio and gRPC pools share: start N workers at once, check them out, replace the dead.

A worker is checked out for one request at a time, like Snakepit's pool; the
time spent waiting for a free worker is measured apart from the round trip.
A worker that breaks is closed and a fresh one takes its slot in the
background, while the others carry on.  Every process ever started is kept,
so :meth:`WorkerPool.close` also reaches workers still starting (a SIGTERM can
arrive mid start-up).  Runs inside locust processes only (gevent).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Generic, Protocol, TypeVar

import gevent
import gevent.lock
import gevent.queue
from gevent.socket import wait_read

from snakepit_harness.errors import (
    BridgeCrashed,
    BridgeTimeout,
    CodecError,
    FramingViolation,
    HandshakeFailed,
    HarnessError,
    TransportError,
)
from snakepit_harness.transports.spawn import record_pid

__all__ = [
    "SPAWN_LOCK",
    "DrainedPipe",
    "PoolError",
    "PoolShare",
    "PoolWorker",
    "WorkerPool",
    "verdict_of",
]

# One spawn at a time (cheap: ~1 ms each); the start-up handshakes, which take
# the time, still run concurrently.  Shared by every pool of the process.
SPAWN_LOCK: Final = gevent.lock.BoundedSemaphore(1)
# Added to a pool's own start-up limit before start() gives up on it.
_START_SLACK_S: Final = 5.0
# A worker that failed its start-up gets this long for its stderr to arrive
# (a traceback, a log line written just before the bytes that broke framing).
_STDERR_SETTLE_S: Final = 0.2


# The one-word verdict of a failed start-up, the words ``snakepit-harness
# send`` uses, by error class; the first match wins (subclasses first).
_VERDICTS: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (FramingViolation, "FRAMING"),
    (HandshakeFailed, "NEGOTIATION"),
    (CodecError, "DECODE"),
    (BridgeTimeout, "TIMEOUT"),
    (BridgeCrashed, "CRASH"),
)
# Bytes of a bridge's stderr a failure keeps.
_STDERR_KEPT: Final = 2000


def verdict_of(error: BaseException) -> str:
    """``FRAMING``, ``TIMEOUT``, ... for an error met while starting a worker (else ``START``)."""
    return next((word for kind, word in _VERDICTS if isinstance(error, kind)), "START")


class PoolError(HarnessError):
    """The pool could not be started: which worker, the verdict, the bytes involved, its stderr."""

    def __init__(
        self, message: str, *, verdict: str = "START", data: bytes = b"", stderr_tail: bytes = b""
    ) -> None:
        super().__init__(f"{verdict}: {message}")
        self.verdict = verdict
        self.detail = message
        self.data = data
        self.stderr_tail = stderr_tail[-_STDERR_KEPT:]

    @classmethod
    def from_error(cls, error: BaseException, where: str, stderr_tail: bytes) -> PoolError:
        """Wrap what a worker's start-up raised, keeping the bytes a bridge got wrong."""
        data = getattr(error, "data", b"") or getattr(error, "payload", b"")
        if isinstance(error, TransportError) and not stderr_tail:
            stderr_tail = error.stderr_tail
        return cls(
            f"{where}: {error}",
            verdict=verdict_of(error),
            data=bytes(data) if isinstance(data, bytes | bytearray) else b"",
            stderr_tail=stderr_tail,
        )


class DrainedPipe:
    """A non-blocking read end drained by a greenlet, its last ``keep`` bytes kept.

    A bridge that fills its stderr pipe blocks and looks hung, so every
    worker's stderr (and a gRPC server's stdout) is read all the time.
    """

    def __init__(self, fd: int, keep: int) -> None:
        self.fd = fd
        self.keep = keep
        os.set_blocking(fd, False)
        self._data = bytearray()
        self.eof = False
        self._greenlet = gevent.spawn(self._drain)

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                try:
                    wait_read(self.fd)
                except (OSError, ValueError):
                    break
                continue
            except OSError:
                break
            if not chunk:
                break
            self._data += chunk
            if len(self._data) > 2 * self.keep:  # trimmed now and then, not per chunk
                del self._data[: len(self._data) - self.keep]
        self.eof = True

    def tail(self) -> bytes:
        return bytes(self._data[-self.keep :])

    def close(self) -> None:
        self._greenlet.kill(block=False)
        with contextlib.suppress(OSError):
            os.close(self.fd)


class PoolWorker(Protocol):
    """What a pool needs of its workers."""

    @property
    def pid(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    # perf_counter_ns when the request in hand was sent, 0 while idle (the
    # window's end counts requests stuck longer than half of it as failed).
    busy_since_ns: int

    def stderr_tail(self) -> bytes: ...

    def close(self) -> None: ...


Worker = TypeVar("Worker", bound=PoolWorker)


@dataclass(frozen=True)
class PoolShare:
    """Where a pool sits in its point: what every pool takes besides its own options."""

    pid_file: str | None = None  # every spawned pid goes here (the sweep checks them)
    timeout: float = 30.0  # per request, and for a free worker
    # Worker numbers (in messages and init pings) go on across the processes
    # that split one pool: this process's first worker is first_index.
    first_index: int = 0
    whole: int | None = None  # the point's pool size when this is a share of it


# A pool on its own: no pid file, the default timeout, the whole pool.
DEFAULT_SHARE: Final = PoolShare()


class WorkerPool(Generic[Worker]):
    """``size`` workers made by :meth:`new_worker`, handed out one request at a time.

    Subclasses give :meth:`spawn_worker` (start the process), :meth:`greet`
    (the start-up handshake: raise when the worker does not answer as it
    must) and :attr:`start_limit_s`; ``broken_by`` lists the exceptions that,
    raised inside :meth:`checkout`, mean the worker cannot be trusted again.
    """

    broken_by: ClassVar[tuple[type[BaseException], ...]] = ()
    start_limit_s: ClassVar[float] = 30.0

    def __init__(self, argv: Sequence[str], size: int, share: PoolShare = DEFAULT_SHARE) -> None:
        self.argv = list(argv)
        self.size = size
        whole = share.whole
        # A share of a pool split among generator processes says so in messages.
        self.label = (
            f"the pool of {size}"
            if whole is None or whole == size
            else f"the pool of {whole} (this generator process's {size} of it)"
        )
        self.pid_file = share.pid_file
        self.timeout = share.timeout
        self.workers: list[Worker] = []
        self.spawned: list[Worker] = []
        self.idle: gevent.queue.Queue[Worker] = gevent.queue.Queue()
        self.restarts = 0
        self.startup_s = 0.0
        self._next_index = share.first_index
        self.closing = False

    def spawn_worker(self, index: int) -> Worker:
        """Start the process of worker number ``index`` (OSError when it cannot be)."""
        raise NotImplementedError

    def greet(self, worker: Worker) -> None:
        """The start-up handshake; raise when the worker does not answer as it must."""
        raise NotImplementedError

    def _started(self, index: int) -> Worker:
        try:
            with SPAWN_LOCK:
                worker = self.spawn_worker(index)
        except OSError as exc:
            raise PoolError(
                f"worker {index}: cannot start the bridge {self.argv[0]!r}: {exc.strerror}"
            ) from exc
        if self.pid_file:  # so that the sweep can prove nothing outlived the point
            record_pid(self.pid_file, worker.pid)
        self.spawned.append(worker)
        try:
            self.greet(worker)
        except Exception as exc:  # any failure must become the point's error, not a hang
            gevent.sleep(_STDERR_SETTLE_S)
            tail = worker.stderr_tail()
            worker.close()
            raise PoolError.from_error(exc, f"worker {index}", tail) from exc
        if self.closing:
            worker.close()
            raise PoolError(f"worker {index}: the pool closed while the worker started")
        return worker

    def _take_index(self) -> int:
        index = self._next_index
        self._next_index += 1
        return index

    def start(self) -> float:
        """Start every worker at once; return seconds until all answered."""
        began = time.perf_counter()
        jobs = [gevent.spawn(self._started, self._take_index()) for _ in range(self.size)]
        gevent.joinall(jobs, timeout=self.start_limit_s + _START_SLACK_S)
        started = [job.value for job in jobs if job.successful()]
        failures = [job.exception for job in jobs if job.exception is not None]
        for worker in started:
            self.workers.append(worker)
            self.idle.put(worker)
        if failures or len(started) < self.size:
            self.close()
            first = failures[0] if failures else None
            if isinstance(first, PoolError):
                raise PoolError(
                    f"{self.label} could not start: {first.detail}",
                    verdict=first.verdict,
                    data=first.data,
                    stderr_tail=first.stderr_tail,
                ) from first
            why = first or f"no answer within {self.start_limit_s + _START_SLACK_S:.0f} s"
            raise PoolError(f"{self.label} could not start: {why}", verdict="TIMEOUT") from first
        self.startup_s = time.perf_counter() - began
        return self.startup_s

    # -- use ----------------------------------------------------------------

    def acquire(self) -> tuple[Worker, int]:
        """A free worker and the nanoseconds spent waiting for it (gevent.queue.Empty on timeout).

        The pair :meth:`acquire`/:meth:`release` is the load users' hot path;
        :meth:`checkout` wraps it for everyone else.
        """
        began = time.perf_counter_ns()
        worker = self.idle.get(timeout=self.timeout)
        return worker, time.perf_counter_ns() - began

    def release(self, worker: Worker, broken: bool = False) -> None:
        """Hand ``worker`` back; a broken (or closed) one is replaced."""
        worker.busy_since_ns = 0
        if broken or worker.closed or self.is_dead(worker):
            self._replace(worker)
        elif not self.closing:
            self.idle.put(worker)

    @contextlib.contextmanager
    def checkout(self) -> Iterator[tuple[Worker, int]]:
        """Yield (a free worker, nanoseconds spent waiting for it)."""
        worker, waited = self.acquire()
        broken = False
        try:
            yield worker, waited
        except self.broken_by:
            broken = True
            raise
        finally:
            self.release(worker, broken)

    def is_dead(self, worker: Worker) -> bool:
        """Whether a worker handed back is gone although nothing was raised (gRPC servers)."""
        return False

    def _replace(self, worker: Worker) -> None:
        worker.close()
        with contextlib.suppress(ValueError):
            self.workers.remove(worker)
        if self.closing:
            return
        self.restarts += 1
        gevent.spawn(self._restart_one)

    def _restart_one(self) -> None:
        try:
            worker = self._started(self._take_index())
        except PoolError:
            # Leave the slot empty: the remaining workers carry on, and the
            # errors already recorded explain what happened.
            return
        self.workers.append(worker)
        self.idle.put(worker)

    def pids(self) -> list[int]:
        return [worker.pid for worker in self.workers if not worker.closed]

    def stderr_tails(self) -> list[str]:
        return [w.stderr_tail().decode("utf-8", "replace")[-400:] for w in self.workers]

    def close(self) -> None:
        self.closing = True
        for worker in self.spawned:
            worker.close()
