"""A pool of stdio bridge processes for gevent-based load users.

Each worker is a bridge process and a
:class:`~snakepit_harness.protocol.HostConnection`: the connection knows the
protocol (the §3.4 offer and its answer, the init ping, what the bytes on
stdout mean, the largest frame a host accepts), the worker only moves bytes.
Locust runs every user as a greenlet in one thread, so a single blocking
``os.read`` would freeze all of them: every pipe is non-blocking, waits go
through gevent's hub (``wait_read``/``wait_write``), and stderr is drained by
a greenlet per worker (a bridge that fills its stderr pipe blocks and looks
hung).  Requests are pre-framed templates (:mod:`.profiles`) written as they
are with ``writev``: in the connection's READY state a send changes nothing,
and building each frame through it would copy a megabyte per call.

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
from typing import ClassVar, Final

from gevent.socket import wait_read, wait_write

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
    Closed,
    Event,
    FramingError,
    HostConnection,
    NegotiationFailed,
    Response,
    Selected,
    init_ping,
    is_ok_result,
)
from snakepit_harness.transports.spawn import record_pid, spawn_with_pipes
from snakepit_harness.transports.stdio import PIPE_SIZE

from .pool import DrainedPipe, PoolError, WorkerPool
from .profiles import RAW_CODEC, raw_wire_codec

__all__ = ["BridgeWorker", "PoolError", "StdioPool"]

STDERR_TAIL_BYTES: Final = 8 * 1024
# One read takes what a full pipe holds; the buffer is the worker's own, reused.
_READ_BUFFER: Final = PIPE_SIZE


class BridgeWorker:
    """One bridge process: its connection, non-blocking pipes, a stderr-draining greenlet."""

    def __init__(
        self, argv: Sequence[str], index: int, codec_mode: str, offered: tuple[str, ...]
    ) -> None:
        self.index = index
        self.connection = HostConnection(codec_mode, offered=offered)
        self.proc, stdin_fd, self._out, stderr_fd = spawn_with_pipes(argv)
        assert stdin_fd is not None
        self._in = stdin_fd
        self._read_into = memoryview(bytearray(_READ_BUFFER))
        self._stderr = DrainedPipe(stderr_fd, STDERR_TAIL_BYTES)
        self.closed = False
        self.busy_since_ns = 0  # perf_counter_ns of the request in hand, 0 when idle

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self) -> bytes:
        return self._stderr.tail()

    def _crashed(self, what: str) -> BridgeCrashed:
        code = self.proc.poll()
        state = "still running" if code is None else f"exit status {code}"
        return BridgeCrashed(f"worker {self.index}: {what} ({state})", self.stderr_tail(), code)

    # -- bytes ----------------------------------------------------------------

    def write(self, parts: list[bytes], size: int, deadline: float) -> None:
        """Write the buffers (``size`` bytes in all) in order, waiting through gevent when full."""
        try:
            written = os.writev(self._in, parts)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            raise self._crashed(f"stdin write failed: {exc}") from None
        if written < size:
            self._write_rest(parts, written, deadline)

    def _write_rest(self, parts: list[bytes], written: int, deadline: float) -> None:
        views = [memoryview(part) for part in parts if part]
        while views:
            while written and views:
                if written >= len(views[0]):
                    written -= len(views[0])
                    views.pop(0)
                else:
                    views[0] = views[0][written:]
                    written = 0
            if not views:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BridgeTimeout(f"worker {self.index}: stdin full", self.stderr_tail())
            with contextlib.suppress(TimeoutError):
                wait_write(self._in, timeout=remaining, timeout_exc=TimeoutError)
            try:
                written = os.writev(self._in, views)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                raise self._crashed(f"stdin write failed: {exc}") from None

    def _fill(self, deadline: float) -> None:
        """Feed the connection what stdout holds, waiting through gevent until there is some."""
        while True:
            try:
                count = os.readv(self._out, [self._read_into])
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BridgeTimeout(
                        f"worker {self.index}: no complete response in time "
                        f"({self.connection.buffered} bytes of a frame buffered)",
                        self.stderr_tail(),
                    ) from None
                with contextlib.suppress(TimeoutError):
                    wait_read(self._out, timeout=remaining, timeout_exc=TimeoutError)
                continue
            except OSError as exc:
                raise self._crashed(f"stdout read failed: {exc}") from None
            self.connection.receive_data(self._read_into[:count] if count else b"")
            return

    def read_event(self, deadline: float) -> Event:
        """The connection's next event, reading stdout until one is whole."""
        connection = self.connection
        while (event := connection.next_event()) is NEED_DATA:
            self._fill(deadline)
        return event

    def failure(self, event: Event) -> HarnessError:
        """The error an event other than the expected one means."""
        if isinstance(event, FramingError):
            return FramingViolation(event.reason, event.data)
        if isinstance(event, NegotiationFailed):
            return HandshakeFailed(event.reason, event.payload)
        if isinstance(event, Closed):
            what = "stdout closed"
            if event.partial:
                what += f" in the middle of a frame ({len(event.partial)} bytes of it received)"
            return self._crashed(what)
        return HandshakeFailed(f"unexpected {type(event).__name__} event", b"")

    def round_trip(self, parts: list[bytes], size: int, timeout: float) -> bytes:
        """Send one pre-framed request (``size`` bytes) and return the payload of the answer."""
        deadline = time.monotonic() + timeout
        self.write(parts, size, deadline)
        event = self.read_event(deadline)
        if type(event) is Response:
            return event.payload
        raise self.failure(event)

    def continue_in(self, codec: str) -> None:
        """Go on in ``codec`` without negotiating (the bridge's command line chose it)."""
        leftover = self.connection.unread(self.connection.buffered)
        self.connection = HostConnection(codec, max_frame_size=self.connection.max_frame_size)
        if leftover:
            self.connection.receive_data(leftover)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
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
        pid_file: str | None = None,
        timeout: float = 30.0,
        first_index: int = 0,
    ) -> None:
        super().__init__(argv, size, pid_file=pid_file, timeout=timeout, first_index=first_index)
        self.codec = codec
        self.select = select
        self.notes: list[str] = []  # what the pool noticed and worked around

    def spawn_worker(self, index: int) -> BridgeWorker:
        if self.codec == RAW_CODEC:
            mode, offered = raw_wire_codec(), ("json",)
        elif self.select == NEGOTIATE:
            mode, offered = NEGOTIATE, (self.codec,)
        else:
            mode, offered = self.codec, ("json",)
        worker = BridgeWorker(self.argv, index, mode, offered)
        if self.pid_file:
            record_pid(self.pid_file, worker.pid)
        return worker

    def greet(self, worker: BridgeWorker) -> None:
        if worker.connection.codec_mode == NEGOTIATE:
            self._negotiate(worker)
        deadline = time.monotonic() + STARTUP_LIMIT
        ping = init_ping(1, f"load_worker_{worker.index}")
        frame = worker.connection.send(ping)
        worker.write([frame], len(frame), deadline)
        event = worker.read_event(deadline)
        if not isinstance(event, Response):
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
        worker.write([offer], len(offer), deadline)
        event = worker.read_event(deadline)
        if isinstance(event, Selected):
            return
        if isinstance(event, NegotiationFailed) and event.answered_in == self.codec:
            worker.continue_in(self.codec)
            note = (
                f"the bridge answered the negotiation frame in {self.codec}: its command line "
                f"already chose the codec, so the run went on as with --codec-select none"
            )
            if note not in self.notes:
                self.notes.append(note)
            return
        error = worker.failure(event)
        if isinstance(event, NegotiationFailed):
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
