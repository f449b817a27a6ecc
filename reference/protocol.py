"""The stdio server loop of the reference bridges (PROTOCOL §2-§5).

:class:`ProtocolHandler` reads length-prefixed frames from fd 0, hands each
well-formed request to a :class:`~snakepit_bridge.adapter.BaseCommandHandler`
and writes one response frame per request, in order, to a private duplicate of
fd 1.  Everything that can go wrong with a frame becomes an error *response*;
the loop only ends on end of input, on SIGTERM/SIGINT, or when the host stops
reading.

Decisions where the spec leaves room (also listed in docs/adapters.md):

* Oversize header (§2.3): the ``frame_too_large`` answer is written as soon
  as the header is seen, *before* the announced payload is read and thrown
  away in bounded chunks.  A host cannot be expected to push gigabytes into a
  pipe before it learns that they are unwanted; answering first lets it stop.
* Requests (§4.1): an ``id`` must be an integer (not a boolean) or a string.
  A missing or wrongly typed id is ``bad_request`` with ``id: null`` (it could
  not be read as an id); ``args: null`` is a non-object ``args`` (bad_request).
  A zero-length or undecodable payload is ``decode_error``; a decoded
  non-object, a missing/non-string ``command`` or non-object ``args`` is
  ``bad_request``.
* Negotiation (§3.4, auto mode only): the bridge picks ``preferred`` when it
  can speak it, else the first codec in ``supported`` that it can speak, else
  JSON (mandatory everywhere).  A bridge restricted to JSON (v1) still answers
  a negotiation frame, with ``json``, so a host that negotiates keeps working.
* SIGTERM/SIGINT (§5.3): the signal ends the bridge with status 0 at once,
  except while a response is being written: then the write is finished first,
  with a deadline (``WRITE_GRACE``) so that a host that stopped reading cannot
  hold the bridge past the 2 s the spec allows.
* Broken pipe (§5.4): a watcher thread polls the stdout pipe for POLLERR /
  POLLHUP, so the bridge notices a host that closed its end even while idle or
  busy in a long command; it then exits with status 0 and no traceback.  The
  same thread makes sure no signal is lost in the instant before a blocking
  read (see :class:`Watcher`).  End of input inside a frame
  (§2.5) exits at once with status 1 and a line on stderr.
* Child processes (§5.3): on the way out the bridge sends SIGTERM to any child
  process an adapter left running.

The hot path is kept lean for the benchmarks: one preallocated receive buffer
filled with ``readv`` (grown only for larger frames, never per frame), one
``writev`` per response, prebuilt JSON encoder/decoder objects and a cached
timestamp prefix, no per-request logging.

The optional C module ``snakepit_bridge._fastloop`` (built at install time
when a C compiler is at hand) runs the common case of this loop: frames of at
most ``FAST_FRAME_MAX`` bytes holding a well-formed request whose command
succeeds.  It hands every other frame back to this module *before* changing
anything, and hands back as data whatever goes wrong once a command has run,
so the Python code below stays the one description of the behaviour; the C
loop only saves the interpreter's per-bytecode cost (perf: 54% of a ping's
CPU here was libpython, 5% the codec).  ``SNAKEPIT_BRIDGE_PURE_PYTHON=1`` turns
it off; the tests run the bridges both ways.

Its parts beside it: :mod:`~snakepit_bridge.stdio_codecs` (the codecs),
:mod:`~snakepit_bridge.stdio_responses` (what a request gets back, no I/O) and
:mod:`~snakepit_bridge.stdio_process` (stdout hygiene, pipes, signals and the
watcher thread, child processes).
"""

from __future__ import annotations

import importlib
import os
import select
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any, Final

from snakepit_harness.protocol import DEFAULT_MAX_FRAME_SIZE, HEADER

from .adapter import BaseCommandHandler
from .stdio_codecs import WIRE_CODECS, CodecNotAvailable, JsonWire, MsgpackWire, WireCodec
from .stdio_process import (
    PIPE_SIZE,
    Watcher,
    claim_stdout,
    is_pipe_or_socket,
    set_pipe_size,
    stop_children,
    tune_allocator,
)
from .stdio_responses import Responses

__all__ = [
    "DISCARD_CHUNK",
    "EXIT_TRUNCATED",
    "FAST_FRAME_MAX",
    "FAST_LOOP_OFF_REASON",
    "PROTOCOL_CHOICES",
    "PURE_PYTHON_ENV",
    "READ_BUFFER_SIZE",
    "WRITE_GRACE",
    "CodecNotAvailable",
    "ProtocolHandler",
    "claim_stdout",
]

# The names tests and older callers reach here; they live in stdio_codecs now.
_JsonWire = JsonWire
_MsgpackWire = MsgpackWire

PROTOCOL_CHOICES: Final = ("json", "msgpack", "auto")

# The receive buffer starts at the pipe size we ask for, so a full pipe fits in
# one read; it grows (and stays grown) only when a larger frame arrives.
READ_BUFFER_SIZE: Final = PIPE_SIZE

# Frames up to this size may take the C fast loop; larger ones take the Python
# loop, whose zero-copy memoryview suits them (the fast loop copies a payload
# into bytes for the decoder, which costs nothing at this size).
FAST_FRAME_MAX: Final = 64 * 1024

# Set to anything but "" or "0" to run the Python loop only (debugging, and the
# tests that check both loops behave the same).
PURE_PYTHON_ENV: Final = "SNAKEPIT_BRIDGE_PURE_PYTHON"

_fastloop: Any  # the module (see _fastloop.c), or None
# Why it is None, in words (for start-up lines and test skip reasons).
FAST_LOOP_OFF_REASON = ""
try:
    _fastloop = importlib.import_module(f"{__package__}._fastloop")
except ImportError:  # not built (no C compiler at install time): the Python loop does it all
    _fastloop = None
    FAST_LOOP_OFF_REASON = "the optional C fast loop is not built (no C compiler at install time)"
if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
    _fastloop = None
    FAST_LOOP_OFF_REASON = f"the C fast loop is switched off ({PURE_PYTHON_ENV} is set)"

# The payload of an oversize frame is read and dropped in pieces of this size:
# bounded memory, few enough system calls.
DISCARD_CHUNK: Final = 64 * 1024

# How long a signal may wait for a response that is being written (§5.3 allows
# 2 s in all; the rest is margin for interpreter shutdown).
WRITE_GRACE: Final = 1.0

# Exit status when input ends in the middle of a frame (§2.5).
EXIT_TRUNCATED: Final = 1

# The methods whose common path the C fast loop runs in their place.
_FAST_LOOP_STANDS_IN_FOR: Final = ("_handle", "_answer", "_write")


class _Terminate(BaseException):
    """Raised by the signal handler to leave the loop (BaseException: adapters'
    ``except Exception`` blocks must not swallow it)."""


class _HostGone(BaseException):
    """The host closed the bridge's stdout (BaseException, like _Terminate)."""


class _EndOfInput(Exception):
    """Input ended; ``partial`` says whether it ended inside a frame."""

    def __init__(self, partial: str = "") -> None:
        super().__init__(partial)
        self.partial = partial


class ProtocolHandler(Responses):
    """Serve ``handler`` over stdin/stdout frames.

    ``protocol`` is ``json``, ``msgpack`` or ``auto`` (JSON until a §3.4
    negotiation frame, if the first frame is one, says otherwise).  ``codecs``
    limits what negotiation may pick (the v1 bridge passes ``("json",)``).
    """

    def __init__(
        self,
        handler: BaseCommandHandler,
        protocol: str = "auto",
        quiet: bool = False,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        *,
        codecs: Sequence[str] = ("json", "msgpack"),
    ) -> None:
        if protocol not in PROTOCOL_CHOICES:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOL_CHOICES)}")
        if max_frame_size < 0:
            raise ValueError("max_frame_size must be >= 0")
        unknown = [name for name in codecs if name not in WIRE_CODECS]
        if unknown or "json" not in codecs:
            raise ValueError(f"codecs must include json and name only json/msgpack: {codecs}")
        if protocol != "auto" and protocol not in codecs:
            raise ValueError(f"protocol {protocol!r} is not among the codecs {tuple(codecs)}")
        self.handler = handler
        self.protocol = protocol
        self.quiet = quiet
        self.max_frame_size = max_frame_size
        self.codecs = tuple(codecs)
        self._codec_cache: dict[str, WireCodec] = {}
        # Fail now (a clear message at start-up) if the codec asked for is absent.
        self._codec = self._get_codec("json" if protocol == "auto" else protocol)
        self._negotiating = protocol == "auto"
        self._out_fd = -1
        self._in_fd = 0
        self._writing = False
        self._pending_signal = 0
        self._pending_hangup = False
        self._watcher: Watcher | None = None
        self._stopping = False
        # The C loop stands in for _handle, _answer and _write on the common
        # path; a subclass that changes one of them gets the Python loop.
        self._fast_loop = _fastloop
        if any(
            getattr(type(self), name) is not getattr(ProtocolHandler, name)
            for name in _FAST_LOOP_STANDS_IN_FOR
        ):
            self._fast_loop = None

    # -- public -------------------------------------------------------------------

    @property
    def codec_name(self) -> str:
        """The codec in use now (changes once, after a negotiation)."""
        return self._codec.name

    def run(self) -> None:
        """Serve until end of input, SIGTERM/SIGINT or a closed stdout; then return.

        Raises ``SystemExit(1)`` when input ends inside a frame (§2.5).
        """
        self._out_fd = claim_stdout()
        set_pipe_size(self._in_fd)
        set_pipe_size(self._out_fd)
        tune_allocator()
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        previous_alarm = signal.signal(signal.SIGALRM, self._on_write_timeout)
        codec = "JSON (negotiable)" if self.protocol == "auto" else self._codec.name
        self._info(
            f"{self.handler.bridge_name} {self.handler.bridge_version}: serving {codec} "
            f"frames on stdio (pid {os.getpid()}, max frame {self.max_frame_size} bytes, "
            f"{'C fast loop' if self._fast_loop is not None else 'Python loop only'})"
        )
        self._stopping = False
        self._watcher = Watcher(
            self._out_fd if is_pipe_or_socket(self._out_fd) else None, threading.get_ident()
        )
        self._watcher.start()
        try:
            self._serve()
        except _EndOfInput as end:
            if end.partial:
                self._complain(f"input ended inside a frame ({end.partial}); exiting")
                raise SystemExit(EXIT_TRUNCATED) from None
            self._info("end of input; exiting")
        except _Terminate as stop:
            self._info(f"{signal.Signals(stop.args[0]).name} received; exiting")
        except _HostGone:
            pass  # §5.4: quietly; stderr may well be gone too
        finally:
            self._stopping = True  # later nudges and signals change nothing
            if self._watcher is not None:
                self._watcher.stop()
                self._watcher = None
            signal.setitimer(signal.ITIMER_REAL, 0)
            for sig, old in previous.items():
                signal.signal(sig, old)
            signal.signal(signal.SIGALRM, previous_alarm)
            stop_children()

    # -- signals ------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            return  # already on the way out (a repeated signal or a nudge)
        if self._watcher is not None and self._watcher.host_gone:
            if self._writing:
                # The write in progress may fail with EPIPE, or may have just
                # completed (the host read it, then closed): leave after it.
                self._pending_hangup = True
                return
            self._stopping = True
            raise _HostGone
        if self._writing:
            # Finish the response being written (§5.3), but not forever.
            if not self._pending_signal:
                self._pending_signal = signum
                signal.setitimer(signal.ITIMER_REAL, WRITE_GRACE)
            return
        self._stopping = True
        raise _Terminate(signum)

    def _on_write_timeout(self, signum: int, frame: FrameType | None) -> None:
        if self._pending_signal:
            self._complain("the host is not reading; giving up the response being written")
            stop_children()
            os._exit(0)

    # -- diagnostics ------------------------------------------------------------------

    def _info(self, line: str) -> None:
        if not self.quiet:
            self._complain(line)

    # -- codecs -------------------------------------------------------------------

    def _get_codec(self, name: str) -> WireCodec:
        codec = self._codec_cache.get(name)
        if codec is None:
            codec = self._codec_cache[name] = WIRE_CODECS[name]()
        return codec

    def _can_speak(self, name: object) -> bool:
        if not isinstance(name, str) or name not in self.codecs:
            return False
        try:
            self._get_codec(name)
        except CodecNotAvailable:
            return False
        return True

    def _choose_codec(self, offer: dict[str, Any]) -> str:
        preferred = offer.get("preferred")
        if self._can_speak(preferred):
            return str(preferred)
        supported = offer.get("supported")
        if isinstance(supported, list):
            for name in supported:
                if self._can_speak(name):
                    return str(name)
        return "json"

    # -- the loop -------------------------------------------------------------------

    def _serve(self) -> None:
        in_fd = self._in_fd
        unpack_header = HEADER.unpack_from
        buf = bytearray(READ_BUFFER_SIZE)
        view = memoryview(buf)
        start = end = 0
        limit = self.max_frame_size
        fast_frame_max = min(FAST_FRAME_MAX, limit)
        while True:
            if self._fast_loop is not None and not self._negotiating and fast_frame_max:
                # The C loop serves every frame it can, then returns here for
                # one step of the Python loop below (see the module docstring).
                pieces = self._codec.fast_loop_pieces(self._fast_loop)
                if pieces is not None:
                    outcome = self._fast_loop.serve(
                        buf,
                        start,
                        end,
                        in_fd,
                        self._out_fd,
                        fast_frame_max,
                        *pieces,
                        self.handler.process_command,
                        self,
                    )
                    code, start, end = outcome[:3]
                    if code == _fastloop.OUTCOME_END_OF_INPUT:
                        if end == start:
                            raise _EndOfInput
                        raise _EndOfInput(self._partial_description(buf, start, end))
                    if code != _fastloop.OUTCOME_SLOW:
                        self._finish_fast_outcome(code, *outcome[3:])
                        continue
            avail = end - start
            if avail >= 4:
                (length,) = unpack_header(buf, start)
                need = 4 + length
                if length > limit:
                    self._reject_oversize(length)
                    taken = min(avail - 4, length)
                    start += 4 + taken
                    if start == end:
                        start = end = 0
                    if length > taken:
                        self._discard(length - taken)
                    continue
                if avail >= need:
                    payload = view[start + 4 : start + need]
                    start += need
                    if start == end:
                        start = end = 0
                    self._handle(payload)
                    continue
            else:
                need = 4
            # Not a whole frame yet: make room for it, then read.
            if start + need > len(buf):
                if need > len(buf):
                    grown = bytearray(min(max(need, 2 * len(buf)), limit + 4))
                    grown[:avail] = view[start:end]
                    view.release()
                    buf = grown
                    view = memoryview(buf)
                else:
                    view[:avail] = view[start:end]
                start, end = 0, avail
            try:
                count = os.readv(in_fd, [view[end:]])
            except BlockingIOError:
                # Someone made our stdin non-blocking: wait instead of spinning.
                select.select([in_fd], [], [])
                continue
            if count == 0:
                if end == start:
                    raise _EndOfInput
                raise _EndOfInput(self._partial_description(buf, start, end))
            end += count

    @staticmethod
    def _partial_description(buf: bytearray, start: int, end: int) -> str:
        avail = end - start
        if avail < 4:
            return f"{avail} of 4 header bytes"
        (length,) = HEADER.unpack_from(buf, start)
        return f"{avail - 4} of {length} payload bytes"

    def _discard(self, left: int) -> None:
        """Read and drop ``left`` bytes in bounded chunks (§2.3)."""
        total = left
        scratch = memoryview(bytearray(min(DISCARD_CHUNK, left)))
        while left:
            try:
                count = os.readv(self._in_fd, [scratch[: min(left, len(scratch))]])
            except BlockingIOError:
                select.select([self._in_fd], [], [])
                continue
            if count == 0:
                raise _EndOfInput(f"{total - left} of {total} bytes of an oversize payload")
            left -= count

    # -- one frame ------------------------------------------------------------------

    def _reject_oversize(self, length: int) -> None:
        self._write(
            self._error_payload(
                None,
                "frame_too_large",
                f"frame header announces {length} bytes; this bridge's limit is "
                f"{self.max_frame_size} (--max-frame-size); the payload is discarded",
            )
        )

    def _handle(self, payload: memoryview) -> None:
        codec = self._codec
        negotiating = self._negotiating
        self._negotiating = False  # only the first frame may negotiate (§3.4)
        if not payload:
            self._write(self._error_payload(None, "decode_error", "empty payload (§2.4)"))
            return
        try:
            request = codec.decode(payload)
        except Exception as exc:
            self._write(self._undecodable(exc))
            return
        if negotiating and type(request) is dict and request.get("type") == "protocol_negotiation":
            chosen = self._choose_codec(request)
            self._write(codec.encode({"type": "protocol_selected", "protocol": chosen}))
            self._codec = self._get_codec(chosen)
            return
        self._write(self._answer(request))

    def _finish_fast_outcome(self, code: int, first: Any, second: Any, third: Any) -> None:
        """Answer what the C fast loop handed back after running a command."""
        if code == _fastloop.OUTCOME_COMMAND_FAILED:
            self._write(self._command_failed(first, second, third))
        elif code == _fastloop.OUTCOME_UNENCODABLE:
            self._codec.recover()
            self._write(self._unencodable(first, second, third))
        elif code == _fastloop.OUTCOME_PARTIAL_WRITE:
            # The C loop has already set ``_writing`` (signals wait for the frame).
            try:
                self._write_rest(first, second, third)
            finally:
                self._writing = False
            self._after_write()
        else:  # pragma: no cover - the C loop returns only the codes above
            raise RuntimeError(f"unknown fast loop outcome {code}")

    # -- writing ------------------------------------------------------------------

    def _write(self, payload: bytes) -> None:
        """Write one whole frame (§2.6); a signal waits until it is out (§5.3)."""
        header = HEADER.pack(len(payload))
        fd = self._out_fd
        self._writing = True
        try:
            written = os.writev(fd, (header, payload))
            if written < 4 + len(payload):
                self._write_rest(header, payload, written)
        except BlockingIOError:
            self._write_rest(header, payload, 0)
        except BrokenPipeError:
            raise _HostGone from None
        finally:
            self._writing = False
        self._after_write()

    def _after_write(self) -> None:
        """Act on a signal or hang-up that arrived while a frame was written."""
        if self._pending_signal or self._pending_hangup:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._stopping = True
            if self._pending_hangup:
                raise _HostGone
            raise _Terminate(self._pending_signal)

    def _write_rest(self, header: bytes, payload: bytes, written: int) -> None:
        view = memoryview(header + payload if written < 4 else payload)[
            written if written < 4 else written - 4 :
        ]
        fd = self._out_fd
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                # Someone made our stdout non-blocking; wait until it drains.
                select.select([], [fd], [])
            except BrokenPipeError:
                raise _HostGone from None
