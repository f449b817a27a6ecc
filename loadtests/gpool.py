"""A pool of bridge processes that gevent-based load users check workers out of.

Locust runs every user as a greenlet in one thread, so a single blocking
``os.read`` on a pipe would freeze all of them.  Here every pipe is
non-blocking and waits go through gevent's hub (``wait_read``/``wait_write``),
stderr is drained by a greenlet per worker (a bridge that fills its stderr
pipe blocks and looks hung), and pipes are enlarged to 1 MiB (64 KiB pipes
make 1 MiB frames 5-10x slower).

A worker is checked out for one request at a time, like Snakepit's pool; the
time spent waiting for a free worker is measured apart from the round trip.
A worker that crashes or times out is killed and replaced in the background.

Every bridge runs in its own session (so killing its group reaches its
children) and its pid is appended to a pid file that the harness uses to
clean up after an interrupted run; the locustfile also kills the pool when
its own parent (the harness) goes away.  Only this module and
:mod:`.grpc_pool` are imported inside locust processes; nothing here runs in
the harness's own process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Final, TypeVar

import gevent
import gevent.lock
import gevent.monkey
import gevent.queue
from gevent.socket import wait_read, wait_write

from snakepit_harness.errors import BridgeCrashed, BridgeTimeout, HarnessError, TransportError
from snakepit_harness.protocol import HEADER_SIZE, encode_frame, get_codec
from snakepit_harness.transports.stdio import PIPE_SIZE, set_pipe_size

from .procs import record_pid

_Worker = TypeVar("_Worker")

__all__ = ["PIPE_SIZE", "BridgeWorker", "Child", "PoolError", "StdioPool", "spawn_with_pipes"]

_READ_CHUNK: Final = 256 * 1024
STDERR_TAIL_BYTES: Final = 8 * 1024
_REAP_TIMEOUT_S: Final = 5.0  # SIGKILLed processes are reaped well within this

# §1: Snakepit waits 20 s for the init ping; so do we.
INIT_TIMEOUT_S: Final = 20.0
# §3.4: the host waits up to 5 s for a negotiation answer.
NEGOTIATION_TIMEOUT_S: Final = 5.0


SPAWN_LOCK: Final = gevent.lock.BoundedSemaphore(1)


class PoolError(HarnessError):
    """The pool could not be started."""


def _pipe() -> tuple[int, int]:
    """A pipe (read end, write end), enlarged to PIPE_SIZE where the kernel allows."""
    read_end, write_end = os.pipe()
    set_pipe_size(write_end, PIPE_SIZE)
    return read_end, write_end


class Child:
    """A child process started by :func:`spawn_with_pipes` (a tiny, gevent-friendly Popen)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 0  # reaped by someone else (gevent's child watcher)
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            gevent.sleep(0.01)
        return self.returncode

    def kill_group(self) -> None:
        """SIGKILL the child's whole session/group, then reap it."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)
        else:
            # The leader is gone; children it left in its group may not be.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self.wait(_REAP_TIMEOUT_S)


def spawn_with_pipes(argv: Sequence[str], stdin: bool = True) -> tuple[Child, int | None, int, int]:
    """Start ``argv`` in a new session with raw pipes: (child, stdin fd, stdout fd, stderr fd).

    ``os.posix_spawnp``, not ``subprocess.Popen``: under gevent, Popen runs
    Python code in the forked child, where the hub can switch to another
    greenlet; a pool's init greenlet then ran inside a fresh child and stole a
    sibling's response (seen here: workers timing out at start-up, a pid
    recorded twice).  posix_spawn runs no Python between fork and exec.  Our
    pipe ends are close-on-exec (Python's default) and non-blocking.
    """
    child_in, our_in = _pipe() if stdin else (os.open(os.devnull, os.O_RDONLY), None)
    our_out, child_out = _pipe()
    our_err, child_err = _pipe()
    try:
        pid = os.posix_spawnp(
            argv[0],
            list(argv),
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, child_in, 0),
                (os.POSIX_SPAWN_DUP2, child_out, 1),
                (os.POSIX_SPAWN_DUP2, child_err, 2),
            ],
            setsid=True,
        )
    except OSError as exc:
        for fd in (child_in, our_in, our_out, child_out, our_err, child_err):
            if fd is not None:
                os.close(fd)
        raise PoolError(f"cannot start the bridge {argv[0]!r}: {exc.strerror}") from exc
    for fd in (child_in, child_out, child_err):
        os.close(fd)
    for fd in (our_in, our_out, our_err):
        if fd is not None:
            os.set_blocking(fd, False)
    return Child(pid), our_in, our_out, our_err


class BridgeWorker:
    """One bridge process with non-blocking pipes and a stderr-draining greenlet."""

    def __init__(self, argv: Sequence[str], index: int, pid_file: str | None = None) -> None:
        self.argv = list(argv)
        self.index = index
        self.proc, stdin_fd, self._out, self._err = spawn_with_pipes(self.argv)
        assert stdin_fd is not None
        self._in = stdin_fd
        if pid_file:
            record_pid(pid_file, self.proc.pid)
        self._buffer = bytearray()
        self._stderr_tail = bytearray()
        self._drain = gevent.spawn(self._drain_stderr)
        self.closed = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self) -> bytes:
        return bytes(self._stderr_tail)

    def _drain_stderr(self) -> None:
        while True:
            try:
                chunk = os.read(self._err, 65536)
            except BlockingIOError:
                try:
                    wait_read(self._err)
                except (OSError, ValueError):
                    return
                continue
            except OSError:
                return
            if not chunk:
                return
            self._stderr_tail += chunk
            if len(self._stderr_tail) > STDERR_TAIL_BYTES:
                del self._stderr_tail[: len(self._stderr_tail) - STDERR_TAIL_BYTES]

    def _crashed(self, what: str) -> BridgeCrashed:
        code = self.proc.poll()
        state = "still running" if code is None else f"exit status {code}"
        return BridgeCrashed(f"worker {self.index}: {what} ({state})", self.stderr_tail(), code)

    def write(self, parts: list[bytes], deadline: float) -> None:
        """Write the buffers in order (``writev``), waiting through gevent when the pipe is full."""
        views = [memoryview(part) for part in parts if part]
        while views:
            try:
                written = os.writev(self._in, views)
            except BlockingIOError:
                written = 0
            except (BrokenPipeError, OSError) as exc:
                raise self._crashed(f"stdin write failed: {exc}") from None
            while written and views:
                if written >= len(views[0]):
                    written -= len(views[0])
                    views.pop(0)
                else:
                    views[0] = views[0][written:]
                    written = 0
            if views:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BridgeTimeout(f"worker {self.index}: stdin full", self.stderr_tail())
                with contextlib.suppress(TimeoutError):
                    wait_write(self._in, timeout=remaining, timeout_exc=TimeoutError)

    def _fill(self, deadline: float, into: memoryview | None = None) -> int:
        """One non-blocking read (into ``into`` or the buffer); waits through gevent."""
        while True:
            try:
                if into is not None:
                    count = os.readv(self._out, [into])
                    if count == 0:
                        raise self._crashed("stdout closed")
                    return count
                chunk = os.read(self._out, _READ_CHUNK)
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BridgeTimeout(
                        f"worker {self.index}: no complete response in time", self.stderr_tail()
                    ) from None
                try:
                    wait_read(self._out, timeout=remaining, timeout_exc=TimeoutError)
                except TimeoutError:
                    continue
                continue
            if not chunk:
                raise self._crashed("stdout closed")
            self._buffer += chunk
            return len(chunk)

    def read_frame(self, deadline: float) -> bytes | bytearray:
        """The next whole frame's payload (a large body is read straight into its own buffer)."""
        while len(self._buffer) < HEADER_SIZE:
            self._fill(deadline)
        size = int.from_bytes(self._buffer[:HEADER_SIZE], "big")
        have = len(self._buffer) - HEADER_SIZE
        if have >= size:
            payload = bytes(self._buffer[HEADER_SIZE : HEADER_SIZE + size])
            del self._buffer[: HEADER_SIZE + size]
            return payload
        # A large frame: read the rest directly into a buffer of the right size.
        body = bytearray(size)
        body[:have] = self._buffer[HEADER_SIZE:]
        self._buffer.clear()
        view = memoryview(body)
        position = have
        while position < size:
            position += self._fill(deadline, view[position:])
        view.release()
        return body  # no copy: a 1 MiB copy would be timed as part of the round trip

    def round_trip(self, parts: list[bytes], timeout: float) -> bytes | bytearray:
        deadline = time.monotonic() + timeout
        self.write(parts, deadline)
        return self.read_frame(deadline)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in (self._in, self._out):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.proc.kill_group()
        self._drain.kill(block=False)
        with contextlib.suppress(OSError):
            os.close(self._err)


def start_concurrently(
    make: Callable[[int], _Worker], size: int, timeout: float
) -> tuple[list[_Worker], str | None]:
    """Start ``size`` workers at once, each in a greenlet (``make(index)``).

    Returns the workers that started and, when any did not (an error or the
    ``timeout``), why; the caller closes the started ones and reports.
    """
    jobs = [gevent.spawn(make, index) for index in range(size)]
    gevent.joinall(jobs, timeout=timeout)
    started = [job.value for job in jobs if job.successful()]
    failures = [job.exception for job in jobs if job.exception is not None]
    if failures:
        return started, str(failures[0])
    if len(started) < size:
        return started, "start-up timed out"
    return started, None


class StdioPool:
    """N workers, each started, switched to the codec and answering an init ping.

    ``codec`` is ``json``/``msgpack`` for a bridge or ``raw`` for the raw echo
    baseline.  ``select`` says how the codec reaches the bridge: ``negotiate``
    (PROTOCOL.md §3.4 negotiation frame), or ``none`` (the bridge's command
    line already chose it, e.g. with ``--protocol``; JSON-only v1 bridges).
    """

    def __init__(
        self,
        argv: Sequence[str],
        size: int,
        codec: str,
        *,
        select: str = "negotiate",
        pid_file: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.argv = list(argv)
        self.size = size
        self.codec = codec
        self.select = select
        self.pid_file = pid_file
        self.timeout = timeout
        self.workers: list[BridgeWorker] = []
        # Every process ever started, so close() also reaches workers still
        # starting (a SIGTERM can arrive mid start-up).
        self._spawned: list[BridgeWorker] = []
        self.idle: gevent.queue.Queue[BridgeWorker] = gevent.queue.Queue()
        self.restarts = 0
        self.startup_s = 0.0
        self._next_index = 0
        self._closed = False

    # -- start-up -----------------------------------------------------------

    def _init_worker(self, worker: BridgeWorker) -> None:
        deadline = time.monotonic() + NEGOTIATION_TIMEOUT_S
        if self.codec != "raw" and self.select == "negotiate":
            offer = {
                "type": "protocol_negotiation",
                "supported": [self.codec],
                "preferred": self.codec,
            }
            worker.write([encode_frame(get_codec("json").encode(offer))], deadline)
            answer = get_codec("json").decode(bytes(worker.read_frame(deadline)))
            chosen = answer.get("protocol") if isinstance(answer, dict) else None
            if chosen != self.codec:
                raise PoolError(
                    f"worker {worker.index}: asked for {self.codec} in a negotiation frame "
                    f"(PROTOCOL.md §3.4), the bridge answered {answer!r}; start the bridge "
                    f"with its codec flag and use --codec-select none"
                )
        deadline = time.monotonic() + INIT_TIMEOUT_S
        init = {
            "id": 1,
            "command": "ping",
            "args": {"worker_id": f"load_worker_{worker.index}", "initialization": True},
        }
        wire_codec = "msgpack" if self.codec == "raw" else self.codec
        try:
            codec = get_codec(wire_codec)
        except HarnessError:
            codec = get_codec("json")
        worker.write([encode_frame(codec.encode(init))], deadline)
        answer = codec.decode(bytes(worker.read_frame(deadline)))
        if self.codec != "raw" and not (
            isinstance(answer, dict)
            and answer.get("success") is True
            and isinstance(answer.get("result"), dict)
            and answer["result"].get("status") == "ok"
        ):
            raise PoolError(
                f"worker {worker.index}: init ping (PROTOCOL.md §5.1) answered {answer!r}"
            )

    def _new_worker(self) -> BridgeWorker:
        index = self._next_index
        self._next_index += 1
        # One spawn at a time (cheap: ~1 ms); the init pings, which take the
        # time, still run concurrently.
        with SPAWN_LOCK:
            worker = BridgeWorker(self.argv, index, self.pid_file)
        self._spawned.append(worker)
        try:
            self._init_worker(worker)
        except (HarnessError, ValueError, TypeError) as exc:
            tail = worker.stderr_tail().decode("utf-8", "replace").strip()
            worker.close()
            detail = f"; stderr: {tail[-600:]}" if tail else ""
            raise PoolError(f"{exc}{detail}") from exc
        return worker

    def start(self) -> float:
        """Start every worker at once; return seconds until all answered their init ping."""
        began = time.perf_counter()
        started, failure = start_concurrently(
            lambda _index: self._new_worker(),
            self.size,
            INIT_TIMEOUT_S + NEGOTIATION_TIMEOUT_S + 5,
        )
        for worker in started:
            self.workers.append(worker)
            self.idle.put(worker)
        if failure is not None:
            self.close()
            raise PoolError(f"the pool of {self.size} could not start: {failure}")
        self.startup_s = time.perf_counter() - began
        return self.startup_s

    # -- use ----------------------------------------------------------------

    @contextlib.contextmanager
    def checkout(self) -> Iterator[tuple[BridgeWorker, int]]:
        """Yield (a free worker, nanoseconds spent waiting for it)."""
        began = time.perf_counter_ns()
        worker = self.idle.get(timeout=self.timeout)
        waited = time.perf_counter_ns() - began
        broken = False
        try:
            yield worker, waited
        except (TransportError, OSError):
            broken = True
            raise
        finally:
            if broken or worker.closed:
                self._replace(worker)
            elif not self._closed:
                self.idle.put(worker)

    def _replace(self, worker: BridgeWorker) -> None:
        worker.close()
        with contextlib.suppress(ValueError):
            self.workers.remove(worker)
        if self._closed:
            return
        self.restarts += 1
        gevent.spawn(self._restart_one)

    def _restart_one(self) -> None:
        try:
            worker = self._new_worker()
        except PoolError:
            # Leave the slot empty: the remaining workers carry on, and the
            # errors already recorded explain what happened.
            return
        if self._closed:
            worker.close()
            return
        self.workers.append(worker)
        self.idle.put(worker)

    def pids(self) -> list[int]:
        return [worker.pid for worker in self.workers if not worker.closed]

    def stderr_tails(self) -> list[str]:
        return [w.stderr_tail().decode("utf-8", "replace")[-400:] for w in self.workers]

    def close(self) -> None:
        self._closed = True
        for worker in self._spawned:
            worker.close()
