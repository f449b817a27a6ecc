"""A pool of stdio bridge processes for gevent-based load users.

Each worker is a bridge process and a
:class:`~snakepit_harness.protocol.HostConnection`: the connection knows the
protocol (the §3.4 offer and its answer, the init ping, what the bytes on
stdout mean, the largest frame a host accepts), the worker only moves bytes.
Locust runs every user as a greenlet in one thread, so a single blocking
``os.read`` would freeze all of them: every pipe is non-blocking, waits go
through gevent's hub (``wait_read``/``wait_write``), and stderr is drained by
a greenlet per worker (a bridge that fills its stderr pipe blocks and looks
hung).  While every worker of the process is busy, a user first polls its
pipe for a few tens of microseconds where timed trials find that faster
than sleeping (:mod:`.spin`).  Requests are pre-framed templates
(:mod:`.profiles`) written as they are with ``writev``: in the connection's
READY state a send changes nothing, and building each frame through it would
copy a megabyte per call.

Bytes on stdout that cannot be a frame (a banner, a log line) become a
FRAMING failure with the bytes and the stderr tail, as ``snakepit-harness
send`` reports them; the connection refuses an announced length over its
limit before a byte of the body is buffered.  A bridge whose command line
already chose the codec asked for (``--protocol msgpack``) answers the JSON
offer in MessagePack: the worker notices and goes on in that codec, as if
``--codec-select none`` had been given.

Runs inside locust processes only; processes are spawned by
:mod:`snakepit_harness.transports.spawn`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Final

import gevent
import gevent.monkey
from gevent.hub import get_hub

from snakepit_harness import protocol
from snakepit_harness.errors import (
    BridgeCrashed,
    BridgeTimeout,
    FramingViolation,
    HandshakeFailed,
    HarnessError,
    RemoteProtocolError,
    TransportError,
)
from snakepit_harness.protocol import (
    NEED_DATA,
    NEGOTIATE,
    NEGOTIATION_TIMEOUT,
    STARTUP_LIMIT,
    init_ping,
    is_ok_result,
)
from snakepit_harness.transports.spawn import spawn_with_pipes
from snakepit_harness.transports.stdio import PIPE_SIZE

from .pool import DEFAULT_SHARE, DrainedPipe, PoolError, PoolShare, WorkerPool
from .profiles import RAW_CODEC, raw_wire_codec
from .spin import SpinPolicy

__all__ = ["BridgeWorker", "PoolError", "StdioPool"]

STDERR_TAIL_BYTES: Final = 8 * 1024
# libev's event masks for io watchers.
_READ: Final = 1
_WRITE: Final = 2
# How often the watchdog looks for waits past their deadline: deadlines are
# seconds long (5 s negotiation, 20 s init ping, 30 s requests by default).
WATCHDOG_INTERVAL_S: Final = 0.1
# One read takes what a full pipe holds; the buffer is the worker's own, reused.
_READ_BUFFER: Final = PIPE_SIZE
# The real select(), not gevent's: a look at the other workers' pipes while
# polling must not switch greenlets.
_select: Final = gevent.monkey.get_original("select", "select")


def _readable(fds: list[int]) -> bool:
    """Whether any of ``fds`` has something to read, asked of the kernel without waiting."""
    return bool(_select(fds, [], [], 0)[0])


class BridgeWorker:
    """One bridge process: its connection, non-blocking pipes, a stderr-draining greenlet.

    Waits go through one persistent gevent watcher per pipe, without a timer:
    a fresh watcher and ``gevent.Timeout`` per wait cost about 8 µs of the
    load generator's CPU per request here, more than the rest of the hot path
    together.  Deadlines are kept by the pool's watchdog instead, which ends a
    wait that outlived its deadline with :class:`BridgeTimeout`
    (:meth:`expire`).
    """

    def __init__(
        self, argv: Sequence[str], index: int, codec_mode: str, offered: tuple[str, ...]
    ) -> None:
        self.index = index
        self.connection = protocol.HostConnection(codec_mode, offered=offered)
        self.proc, stdin_fd, self._out, stderr_fd = spawn_with_pipes(argv)
        assert stdin_fd is not None
        self._in = stdin_fd
        self._hub = get_hub()
        self._readable = self._hub.loop.io(self._out, _READ)
        self._writable = self._hub.loop.io(self._in, _WRITE)
        self._waiting_on: Any = None  # the watcher a greenlet waits on now
        self.deadline = 0.0  # time.monotonic() by which that wait must end
        self._read_into = memoryview(bytearray(_READ_BUFFER))
        self._stderr = DrainedPipe(stderr_fd, STDERR_TAIL_BYTES)
        self.closed = False
        self.busy_since_ns = 0  # perf_counter_ns of the request in hand, 0 when idle
        self.spin: SpinPolicy | None = None  # poll before waiting (see .spin); None: wait
        self.neighbours: list[BridgeWorker] = []  # the process's workers, this one included

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self) -> bytes:
        return self._stderr.tail()

    def _crashed(self, what: str) -> BridgeCrashed:
        code = self.proc.poll()
        state = "still running" if code is None else f"exit status {code}"
        return BridgeCrashed(f"worker {self.index}: {what} ({state})", self.stderr_tail(), code)

    # -- waiting ------------------------------------------------------------------

    def _wait(self, watcher: Any) -> None:
        self._waiting_on = watcher
        try:
            self._hub.wait(watcher)
        finally:
            self._waiting_on = None

    def expire(self, now: float) -> None:
        """The watchdog's call: end a wait that is past its deadline with BridgeTimeout."""
        if self._waiting_on is None or now < self.deadline:
            return
        if self._waiting_on is self._writable:
            what = "stopped reading its stdin"
        else:
            what = (
                f"no complete response in time ({self.connection.buffered} bytes of a frame "
                "buffered)"
            )
        self._hub.cancel_wait(
            self._waiting_on, BridgeTimeout(f"worker {self.index}: {what}", self.stderr_tail())
        )

    # -- bytes ----------------------------------------------------------------

    def write(self, parts: Sequence[bytes | memoryview], size: int) -> None:
        """Write the buffers (``size`` bytes in all) in order, waiting while the pipe is full."""
        written = self._writev(parts)
        if written < size:
            self._write_rest(parts, written)

    def _writev(self, parts: Sequence[bytes | memoryview]) -> int:
        try:
            return os.writev(self._in, parts)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise self._crashed(f"stdin write failed: {exc}") from None

    def _write_rest(self, parts: Sequence[bytes | memoryview], written: int) -> None:
        views = [memoryview(part) for part in parts if part]
        while views:
            while written and views:
                if written >= len(views[0]):
                    written -= len(views[0])
                    views.pop(0)
                else:
                    views[0] = views[0][written:]
                    written = 0
            if views:
                self._wait(self._writable)
                written = self._writev(views)

    def _fill(self) -> None:
        """Wait until stdout is readable, then feed the connection what it holds.

        Waiting first: right after a request its answer is never there yet, and
        a read that fails costs a system call and an exception.  (The wait is
        written out here rather than through :meth:`_wait`: this is the line
        every request runs.)
        """
        readable = self._readable
        while True:
            self._waiting_on = readable
            try:
                self._hub.wait(readable)
            finally:
                self._waiting_on = None
            try:
                count = os.readv(self._out, [self._read_into])
            except BlockingIOError:
                continue
            except OSError as exc:
                raise self._crashed(f"stdout read failed: {exc}") from None
            self.connection.receive_data(self._read_into[:count] if count else b"")
            return

    def read_event(self, deadline: float) -> protocol.Event:
        """The connection's next event, reading stdout until one is whole."""
        self.deadline = deadline
        connection = self.connection
        while (event := connection.next_event()) is NEED_DATA:
            self._fill()
        return event

    def _answer(self) -> protocol.Event:
        """:meth:`read_event` right after a request: read before asking the connection.

        The answer is not there yet, so asking first would only cost a call.
        A worker in use is always READY (one that broke framing, or whose
        output ended, is replaced), and a frame left over from before (a
        bridge answering twice) still comes out first, as it would have.
        With a :class:`~.spin.SpinPolicy` the first read polls the pipe for
        the policy's window before it waits in the hub.
        """
        connection = self.connection
        spin = self.spin
        if spin is None or not (window := spin.next_window_ns()) or not self._poll(window, spin):
            self._fill()
        while (event := connection.next_event()) is NEED_DATA:
            self._fill()
        return event

    def _others_waiting(self) -> list[int] | None:
        """The stdout fds of this process's other workers, when every one is busy; else None.

        Polling is only worth it while nothing else can run: with a worker
        free, a user may be about to send it a request, and polling would
        hold that user up.
        """
        workers = self.neighbours
        if not all(worker.busy_since_ns for worker in workers):
            return None
        return [worker._out for worker in workers if worker is not self]

    def _poll(self, window_ns: int, spin: SpinPolicy) -> bool:
        """Read stdout without waiting for up to ``window_ns``; True once bytes (or EOF) came.

        Nothing else runs meanwhile (no greenlet switch), so this polls only
        while every worker of the process is busy (:meth:`_others_waiting`),
        and stops as soon as another worker's answer is readable: the hub
        then hands that one to its user while this one waits.
        """
        others = self._others_waiting()
        if others is None:
            return False
        out, into, now = self._out, self._read_into, time.perf_counter_ns
        began = now()
        until = began + window_ns
        while True:
            try:
                count = os.readv(out, [into])
            except BlockingIOError:
                ended = now()
                if ended < until and not (others and _readable(others)):
                    continue
                spin.heard(False, ended - began)
                return False
            except OSError as exc:
                raise self._crashed(f"stdout read failed: {exc}") from None
            spin.heard(True, now() - began)
            self.connection.receive_data(into[:count] if count else b"")
            return True

    def failure(self, event: protocol.Event) -> HarnessError:
        """The error an event other than the expected one means."""
        if isinstance(event, protocol.FramingError):
            return FramingViolation(event.reason, event.data)
        if isinstance(event, protocol.NegotiationFailed):
            return HandshakeFailed(event.reason, event.payload)
        if isinstance(event, protocol.Closed):
            what = "stdout closed"
            if event.partial:
                what += f" in the middle of a frame ({len(event.partial)} bytes of it received)"
            return self._crashed(what)
        return HandshakeFailed(f"unexpected {type(event).__name__} event", b"")

    def round_trip(self, parts: list[bytes], size: int, timeout: float) -> bytes:
        """Send one pre-framed request (``size`` bytes) and return the payload of the answer."""
        self.deadline = time.monotonic() + timeout
        self.write(parts, size)
        event = self._answer()
        if type(event) is protocol.Response:
            return event.payload
        raise self.failure(event)

    def continue_in(self, codec: str) -> None:
        """Go on in ``codec`` without negotiating (the bridge's command line chose it)."""
        old = self.connection
        leftover = old.unread(old.buffered)
        self.connection = protocol.HostConnection(codec, max_frame_size=old.max_frame_size)
        if leftover:
            self.connection.receive_data(leftover)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._waiting_on is not None:
            self._hub.cancel_wait(self._waiting_on, self._crashed("the pool closed"))
        self._readable.close()
        self._writable.close()
        for fd in (self._in, self._out):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.proc.kill_group()
        self._stderr.close()


class StdioPool(WorkerPool[BridgeWorker]):
    """N stdio workers, each started, switched to the codec and answering an init ping.

    ``codec`` is ``json``/``msgpack`` for a bridge or ``raw`` for the raw echo
    baseline.  ``select`` says how the codec reaches the bridge: ``negotiate``
    (PROTOCOL.md §3.4 negotiation frame), or ``none`` (the bridge's command
    line already chose it, e.g. with ``--protocol``; JSON-only v1 bridges).
    """

    # A worker that broke framing, crashed or timed out is not asked again.
    broken_by: ClassVar[tuple[type[BaseException], ...]] = (
        TransportError,
        RemoteProtocolError,
        OSError,
    )
    start_limit_s: ClassVar[float] = STARTUP_LIMIT + NEGOTIATION_TIMEOUT

    def __init__(
        self,
        argv: Sequence[str],
        size: int,
        codec: str,
        *,
        select: str = NEGOTIATE,
        share: PoolShare = DEFAULT_SHARE,
        poll_answers: bool = True,
    ) -> None:
        super().__init__(argv, size, share)
        self.codec = codec
        self.select = select
        # While every worker of the process is busy, the process has nothing
        # else to do but wait for an answer: it polls first, where its trials
        # find that faster (.spin).  One policy for the process: its trials
        # time the process's requests, whichever worker sent them.
        self.spin = SpinPolicy() if poll_answers else None
        self.notes: list[str] = []  # what the pool noticed and worked around
        self._watchdog = gevent.spawn(self._watch_deadlines)

    def _watch_deadlines(self) -> None:
        while not self.closing:
            gevent.sleep(WATCHDOG_INTERVAL_S)
            now = time.monotonic()
            for worker in self.spawned:
                if not worker.closed:
                    worker.expire(now)

    def close(self) -> None:
        super().close()
        self._watchdog.kill(block=False)

    def poll_counts(self) -> tuple[int, int, float]:
        """(answers polled for, found by polling, seconds spent polling) so far."""
        if self.spin is None:
            return 0, 0, 0.0
        return self.spin.polls, self.spin.hits, self.spin.polled_ns / 1e9

    def spawn_worker(self, index: int) -> BridgeWorker:
        if self.codec == RAW_CODEC:
            mode, offered = raw_wire_codec(), ("json",)
        elif self.select == NEGOTIATE:
            mode, offered = NEGOTIATE, (self.codec,)
        else:
            mode, offered = self.codec, ("json",)
        worker = BridgeWorker(self.argv, index, mode, offered)
        worker.spin = self.spin
        worker.neighbours = self.workers  # the pool's own list, as workers come and go
        return worker

    def greet(self, worker: BridgeWorker) -> None:
        if worker.connection.codec_mode == NEGOTIATE:
            self._negotiate(worker)
        deadline = time.monotonic() + STARTUP_LIMIT
        ping = init_ping(1, f"load_worker_{worker.index}")
        frame = worker.connection.send(ping)
        worker.deadline = deadline
        worker.write([frame], len(frame))
        event = worker.read_event(deadline)
        if not isinstance(event, protocol.Response):
            raise worker.failure(event)
        if self.codec == RAW_CODEC:
            return  # the raw echo sends the ping back unread
        answer = event.decode()
        if not is_ok_result(answer):
            raise HandshakeFailed(
                f"the init ping (PROTOCOL.md §5.1) was answered {answer!r}", event.payload
            )

    def _negotiate(self, worker: BridgeWorker) -> None:
        deadline = time.monotonic() + NEGOTIATION_TIMEOUT
        offer = worker.connection.send_offer()
        worker.deadline = deadline
        worker.write([offer], len(offer))
        event = worker.read_event(deadline)
        if isinstance(event, protocol.Selected):
            return
        if isinstance(event, protocol.NegotiationFailed) and event.answered_in == self.codec:
            worker.continue_in(self.codec)
            note = (
                f"the bridge answered the negotiation frame in {self.codec}: its command line "
                f"already chose the codec, so the run went on as with --codec-select none"
            )
            if note not in self.notes:
                self.notes.append(note)
            return
        error = worker.failure(event)
        if isinstance(event, protocol.NegotiationFailed):
            fix = (
                f"its command line chose {event.answered_in}: load it with --codec "
                f"{event.answered_in}, or start it without its codec flag to negotiate "
                f"{self.codec}"
                if event.answered_in
                else "start the bridge with its codec flag and use --codec-select none"
            )
            raise HandshakeFailed(
                f"asked for {self.codec} in a negotiation frame (PROTOCOL.md §3.4): "
                f"{event.reason}; {fix}",
                event.payload,
            )
        raise error
