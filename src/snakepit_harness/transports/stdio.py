"""Drive a bridge executable over its stdin/stdout (the stdio profiles).

This is the only place in the harness that spawns bridge processes.  A bridge
runs in its own session and process group so that one ``killpg`` reaches every
child it started; its stderr is drained all the time by a thread (a bridge
that fills its stderr pipe would otherwise block and look hung) and the tail
is kept for error reports; every read and write has a deadline, so a silent or
stuck bridge becomes :class:`BridgeTimeout`, never a hung harness.  Every
bridge still alive when the interpreter exits is killed (see ``process``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import sys
import termios
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

from .. import protocol
from ..errors import BridgeCrashed, BridgeTimeout, FramingViolation, HandshakeFailed
from ..protocol import (
    HOST_MAX_FRAME_SIZE,
    NEED_DATA,
    Codec,
    encode_frame,
)
from .process import ProcessOwner, describe_returncode, process_memory, spawn_in_group

__all__ = [
    "DEFAULT_READ_MAX_FRAME",
    "PIPE_SIZE",
    "STDERR_TAIL_BYTES",
    "StdioBridge",
    "set_pipe_size",
]

# 64 KiB default pipes make 1 MiB frames 5-10x slower (measured on this kind of
# machine); 1 MiB is also Linux's default cap for unprivileged processes.
PIPE_SIZE: Final = 1024 * 1024

# Enough stderr to show a Python traceback plus some context, small enough to
# print in a failure report.
STDERR_TAIL_BYTES: Final = 16 * 1024

# The harness accepts responses up to this size (see the protocol core).
DEFAULT_READ_MAX_FRAME: Final = HOST_MAX_FRAME_SIZE

# Bytes of stdout kept for reports (the start of what the bridge wrote).
STDOUT_RECORD_BYTES: Final = 4096

_READ_CHUNK: Final = 1024 * 1024


@dataclass
class _Record:
    """What crossed the pipes, for failure reports."""

    sent: bytearray = field(default_factory=bytearray)
    sent_total: int = 0
    received: bytearray = field(default_factory=bytearray)
    received_total: int = 0

    def add_sent(self, data: bytes) -> None:
        self.sent_total += len(data)
        room = STDOUT_RECORD_BYTES - len(self.sent)
        if room > 0:
            self.sent += data[:room]

    def add_received(self, data: bytes) -> None:
        self.received_total += len(data)
        room = STDOUT_RECORD_BYTES - len(self.received)
        if room > 0:
            self.received += data[:room]


class StdioBridge(ProcessOwner):
    """One bridge process spoken to through length-prefixed frames on stdio.

    Use as a context manager; ``close()`` kills the whole process group, so a
    bridge and everything it spawned are gone when the block ends.  What the
    bytes mean is the business of :attr:`connection`, a
    :class:`~snakepit_harness.protocol.HostConnection` this class feeds:
    ``codec_mode`` says how it picks its codec (``negotiate``: run
    :meth:`negotiate` first).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        read_max_frame: int = DEFAULT_READ_MAX_FRAME,
        stderr_tail_bytes: int = STDERR_TAIL_BYTES,
        codec_mode: str = "json",
    ) -> None:
        if not argv:
            raise ValueError("a bridge command line is needed")
        self.argv = list(argv)
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self.connection = protocol.HostConnection(codec_mode, max_frame_size=read_max_frame)
        self._stderr_tail_bytes = stderr_tail_bytes
        self._stdin_fd: int | None = None
        self._stdout_fd: int | None = None
        self._stdout_eof = False
        self.record = _Record()
        self.started_at = 0.0

    # -- life cycle ---------------------------------------------------------

    def start(self) -> Self:
        """Spawn the bridge (in a new session, so it leads its own process group)."""
        if self._proc is not None:
            raise RuntimeError("bridge already started")
        spawned = spawn_in_group(self.argv, env=self._env, cwd=self._cwd, pipe_size=PIPE_SIZE)
        self.started_at = time.monotonic()
        self._started(spawned.proc, spawned.stderr_fd, self._stderr_tail_bytes)
        self._stdin_fd, self._stdout_fd = spawned.stdin_fd, spawned.stdout_fd
        for fd in (self._stdin_fd, self._stdout_fd):
            if fd is not None:
                os.set_blocking(fd, False)
        return self

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close_stdin(self) -> None:
        """Close the bridge's stdin (end of input)."""
        if self._stdin_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._stdin_fd)
            self._stdin_fd = None

    def close_stdout(self) -> None:
        """Close our end of the bridge's stdout (its next write gets a broken pipe)."""
        if self._stdout_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._stdout_fd)
            self._stdout_fd = None

    def close(self) -> None:
        """Kill the group if anything is left, reap, and release every descriptor."""
        if self._proc is None:
            return
        self.close_stdin()
        self.kill()
        self.close_stdout()
        self._release_process()

    # -- observation --------------------------------------------------------

    def peak_rss_bytes(self) -> int | None:
        """The bridge's peak resident memory (VmHWM) or None where /proc cannot tell."""
        return process_memory(self.pid).get("VmHWM")

    def _time_left(self, deadline: float, what: str) -> float:
        """Seconds left until ``deadline``; past it, BridgeTimeout saying ``what``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BridgeTimeout(what, self.stderr_tail())
        return remaining

    # -- writing ------------------------------------------------------------

    def send_bytes(self, data: bytes, timeout: float) -> None:
        """Write raw bytes to the bridge's stdin within ``timeout`` seconds."""
        if self._stdin_fd is None:
            raise BridgeCrashed("the bridge's stdin is closed", self.stderr_tail(), self.poll())
        self.record.add_sent(data)
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                written = os.write(self._stdin_fd, view)
            except BlockingIOError:
                written = 0
            except BrokenPipeError:
                raise self._crashed("the bridge closed its stdin") from None
            view = view[written:]
            if view:
                remaining = self._time_left(
                    deadline,
                    f"the bridge stopped reading its stdin ({len(view)} of "
                    f"{len(data)} bytes unsent after {timeout:.1f} s)",
                )
                select.select([], [self._stdin_fd], [], min(remaining, 0.5))

    def send_frame(self, payload: bytes, timeout: float) -> bytes:
        """Frame ``payload``, send it, and return the wire bytes sent."""
        wire = encode_frame(payload)
        self.send_bytes(wire, timeout)
        return wire

    def send(self, value: Any, codec: Codec | None, timeout: float) -> bytes:
        """Encode ``value`` (with ``codec``, or the connection's), frame and send it.

        Returns the wire bytes sent.
        """
        if codec is None:
            wire = self.connection.send(value)
        else:
            wire = self.connection.send_payload(codec.encode(value))
        self.send_bytes(wire, timeout)
        return wire

    # -- reading ------------------------------------------------------------

    def read_event(self, timeout: float) -> protocol.Event:
        """The connection's next event, reading stdout for at most ``timeout`` s.

        Raises :class:`BridgeTimeout` when none is whole in time; every other
        outcome, framing errors and the end of output included, is an event.
        """
        deadline = time.monotonic() + timeout
        while True:
            event = self.connection.next_event()
            if event is not NEED_DATA:
                return event
            if self._stdout_fd is None or self._stdout_eof:
                # Our read end is closed: nothing more can arrive.
                self._end_of_output()
                continue
            remaining = self._time_left(
                deadline,
                f"no complete response within {timeout:.1f} s "
                f"({self.connection.buffered} bytes of a partial frame buffered)",
            )
            readable, _, _ = select.select([self._stdout_fd], [], [], remaining)
            if readable:
                self._read_available()

    def read_frame(self, timeout: float) -> bytes:
        """Return the next payload the bridge writes, waiting at most ``timeout`` s.

        Raises :class:`BridgeTimeout` when nothing whole arrives in time,
        :class:`BridgeCrashed` when stdout ends (with how the process ended),
        :class:`FramingViolation` when the header is implausible (which is
        what text on stdout looks like), and :class:`HandshakeFailed` when the
        frame was the unusable answer to a negotiation offer.
        """
        return self.payload_of(self.read_event(timeout))

    def payload_of(self, event: protocol.Event) -> bytes:
        """The frame an event carries, or the error it stands for, raised (see read_frame)."""
        if isinstance(event, protocol.Response | protocol.Selected):
            return event.payload
        if isinstance(event, protocol.FramingError):
            raise FramingViolation(event.reason, event.data)
        if isinstance(event, protocol.NegotiationFailed):
            raise HandshakeFailed(event.reason, event.payload)
        raise self._crashed_on_eof()

    def read_value(self, codec: Codec | None, timeout: float) -> Any:
        """Read the next frame and decode it (CodecError when it does not decode)."""
        return (codec or self.connection.codec).decode(self.read_frame(timeout))

    def request(self, value: Any, codec: Codec | None, timeout: float) -> Any:
        """Send one request and return the decoded next response."""
        deadline = time.monotonic() + timeout
        self.send(value, codec, timeout)
        return self.read_value(codec, max(0.0, deadline - time.monotonic()))

    def negotiate(self, timeout: float) -> tuple[str, bytes]:
        """Run the §3.4 handshake: (the codec the bridge selected, the bytes sent).

        Raises :class:`HandshakeFailed` when the answer is unusable, and what
        :meth:`read_frame` raises when there is none.
        """
        wire = self.connection.send_offer()
        self.send_bytes(wire, timeout)
        event = self.read_event(timeout)
        if isinstance(event, protocol.Selected):
            return event.codec, wire
        self.payload_of(event)  # raises what the event stands for
        # A Response cannot follow an offer (the connection reads it as the answer).
        raise HandshakeFailed("the answer to the offer was read as a response")

    def wait_stdout_eof(self, timeout: float) -> bool:
        """Read (and record) stdout until EOF; True if EOF came within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self._stdout_eof and self._stdout_fd is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([self._stdout_fd], [], [], remaining)
            if readable:
                self._read_available()
        return True

    def wait_stdout_readable(self, timeout: float) -> bool:
        """True once the bridge has written something not yet read (or closed stdout),
        within ``timeout`` s.  Reads nothing: a bridge writing more than the pipe
        holds stays blocked in its write, which is how a case catches it mid-frame."""
        if self.connection.buffered or self._stdout_eof or self._stdout_fd is None:
            return True
        readable, _, _ = select.select([self._stdout_fd], [], [], max(0.0, timeout))
        return bool(readable)

    @property
    def unread_stdout(self) -> int:
        """Bytes the bridge wrote that are not yet part of a returned frame."""
        return self.connection.buffered

    def wait_stdin_drained(self, timeout: float) -> bool:
        """Wait until the bridge has read all bytes written to its stdin (Linux FIONREAD).

        True when the pipe is empty.  Lets a caller make two writes arrive as two
        reads; where the ioctl is unavailable it returns False at once.
        """
        if self._stdin_fd is None:
            return False
        deadline = time.monotonic() + timeout
        buffer = bytearray(4)
        while True:
            try:
                fcntl.ioctl(self._stdin_fd, termios.FIONREAD, buffer)
            except OSError:
                return False
            if int.from_bytes(buffer, sys.byteorder) == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)

    def unread_bytes(self, limit: int = STDOUT_RECORD_BYTES) -> bytes:
        """The first ``limit`` unread stdout bytes (garbage to show in hex, a partial frame)."""
        return self.connection.unread(limit)

    def _read_available(self) -> None:
        assert self._stdout_fd is not None
        try:
            chunk = os.read(self._stdout_fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            chunk = b""
        if not chunk:
            self._end_of_output()
            return
        self.record.add_received(chunk)
        self.connection.receive_data(chunk)

    def _end_of_output(self) -> None:
        if not self._stdout_eof:
            self._stdout_eof = True
            self.connection.receive_data(b"")

    def _crashed(self, what: str) -> BridgeCrashed:
        exit_ = self.wait_exit(1.0)
        returncode = exit_.returncode if exit_ else None
        return BridgeCrashed(
            f"{what} ({describe_returncode(returncode)})", self.stderr_tail(), returncode
        )

    def _crashed_on_eof(self) -> BridgeCrashed:
        partial = self.connection.buffered
        what = "the bridge closed its stdout"
        if partial:
            what += f" in the middle of a frame ({partial} bytes of it received)"
        return self._crashed(what)


def set_pipe_size(fd: int, size: int = PIPE_SIZE) -> bool:
    """Ask the kernel for a bigger pipe buffer; False where it refuses."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (OSError, AttributeError):
        return False
    return True
