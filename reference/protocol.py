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
  read (see :class:`_Watcher`).  End of input inside a frame
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
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import json.encoder
import json.scanner
import os
import select
import signal
import stat
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final

from snakepit_harness.protocol import DEFAULT_MAX_FRAME_SIZE, HEADER, MAX_ENCODABLE_LENGTH

from .adapter import BaseCommandHandler, CommandError, utc_timestamp

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

PROTOCOL_CHOICES: Final = ("json", "msgpack", "auto")

# The receive buffer starts at the pipe size we ask for, so a full pipe fits in
# one read; it grows (and stays grown) only when a larger frame arrives.
READ_BUFFER_SIZE: Final = 1024 * 1024
PIPE_SIZE: Final = 1024 * 1024

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

# How often the watcher thread re-interrupts the main thread until it has
# acted on a signal or a hang-up: quick against the 2 s budget, rare enough to
# cost nothing.
NUDGE_INTERVAL_MS: Final = 50

# Signal numbers (as set_wakeup_fd writes them) that end the bridge.
_TERMINATING: Final = frozenset((signal.SIGTERM.value, signal.SIGINT.value))

# Exit status when input ends in the middle of a frame (§2.5).
EXIT_TRUNCATED: Final = 1

_HANGUP: Final = select.POLLERR | select.POLLHUP | select.POLLNVAL


class CodecNotAvailable(RuntimeError):
    """The codec asked for cannot be used here (msgpack not installed)."""


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


# -- codecs -----------------------------------------------------------------------


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON token {token!r}")


class _JsonWire:
    """Strict JSON (§3.1) with prebuilt encoder and decoder objects (json.dumps and
    json.loads with options build a new one per call)."""

    name = "json"

    def __init__(self) -> None:
        encoder = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
        self._encode: Callable[[Any], str] = encoder.encode
        self._decoder = json.JSONDecoder(parse_constant=_reject_constant)
        self._decode = self._decoder.decode
        self._c_encoder: Any = None
        # JSONEncoder.encode builds a C encoder on every call; build it once.
        # (No circular-reference markers: a cycle ends in RecursionError, which
        # is reported as an unencodable result all the same.)  The C encoder's
        # signature is CPython's private business, so fall back quietly.
        try:
            c_encoder = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
                None,
                encoder.default,
                json.encoder.encode_basestring_ascii,
                None,
                ":",
                ",",
                False,
                False,
                False,
            )
            if "".join(c_encoder({"k": [1, 2.5, None, True, "\u00e9"]}, 0)) == (
                '{"k":[1,2.5,null,true,"\\u00e9"]}'
            ):
                self._encode = lambda value: "".join(c_encoder(value, 0))
                self._c_encoder = c_encoder
        except Exception:
            pass

    def decode(self, payload: memoryview) -> Any:
        return self._decode(str(payload, "utf-8"))

    def fast_loop_pieces(self) -> tuple[int, Any, Any] | None:
        """(codec, decode, encode) for the C fast loop: the stdlib's C scanner and
        C encoder, which it falls back on for what its own JSON reader and writer
        leave to the stdlib; None where this Python lacks them (the Python loop
        then serves every frame)."""
        if _fastloop is None or self._c_encoder is None:
            return None
        scanner_type: Any = json.scanner.c_make_scanner  # type: ignore[attr-defined]
        scan_once = getattr(self._decoder, "scan_once", None)  # set by __init__, untyped
        if scanner_type is None or not isinstance(scan_once, scanner_type):
            return None
        return _fastloop.CODEC_JSON, scan_once, self._c_encoder

    def recover(self) -> None:
        """Nothing to reset after a failed encode (see _MsgpackWire.recover)."""

    def encode(self, value: Any) -> bytes:
        # ensure_ascii (the default) makes the text pure ASCII, hence valid UTF-8
        # even for strings holding lone surrogates.
        return self._encode(value).encode("ascii")


class _MsgpackWire:
    """Safe MessagePack (§3.2): str and bin apart, one object, bounded by the frame."""

    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:
            raise CodecNotAvailable(
                "MessagePack needs the 'msgpack' package: pip install 'snakepit-harness[msgpack]'"
            ) from exc
        self._msgpack = msgpack
        self._unpackb = msgpack.unpackb
        self._packer = msgpack.Packer(use_bin_type=True)

    def decode(self, payload: memoryview) -> Any:
        size = len(payload)
        return self._unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            # No string or container can claim more entries than the payload
            # has bytes, so decoding allocates no more than the frame justifies.
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size // 2,
            max_ext_len=size,
        )

    def encode(self, value: Any) -> bytes:
        try:
            data: bytes = self._packer.pack(value)
        except BaseException:
            self.recover()
            raise
        return data

    def recover(self) -> None:
        """Never reuse a packer after an error (its buffer may hold a part)."""
        self._packer = self._msgpack.Packer(use_bin_type=True)

    def fast_loop_pieces(self) -> tuple[int, Any, Any] | None:
        """(codec, decode, encode) for the C fast loop.  Plain ``unpackb``: since
        msgpack 1.0 its defaults are the limits ``decode`` spells out (every
        length bounded by the payload's, str/bin apart, string map keys)."""
        if _fastloop is None:
            return None
        return _fastloop.CODEC_MSGPACK, self._unpackb, self._packer.pack


_WIRE_CODECS: Final[dict[str, Callable[[], _JsonWire | _MsgpackWire]]] = {
    "json": _JsonWire,
    "msgpack": _MsgpackWire,
}


# -- stdout hygiene (§2.7) --------------------------------------------------------

_frames_fd: int | None = None


def claim_stdout() -> int:
    """Keep fd 1 for frames only; return the private descriptor to write them to.

    Duplicates fd 1 (non-inheritable, so child processes never see it), then
    makes fd 1 a copy of stderr and points ``sys.stdout`` at ``sys.stderr``:
    ``print()``, C-level writes to fd 1 and child processes all land on
    stderr.  Idempotent.
    """
    global _frames_fd
    if _frames_fd is None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        frames_fd = os.dup(1)
        try:
            os.dup2(2, 1)
        except OSError:  # no stderr: send stray output nowhere rather than into frames
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
        sys.stdout = sys.stderr
        _frames_fd = frames_fd
    return _frames_fd


def _set_pipe_size(fd: int) -> None:
    # Bigger pipes make large frames several times faster; refusal is harmless.
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


# glibc returns freed memory at the top of the heap to the kernel once 2x the
# largest recent block is free, so every large frame's buffers were mapped
# afresh, page fault by page fault: measured 2.5x slower 1 MiB echoes.  Keeping
# up to this much free heap (and serving blocks below the mmap threshold from
# the heap) makes a steady stream of large frames reuse warm memory.  The cost
# is that the bridge keeps its peak heap, which frames of the maximum size
# justify anyway.
_MALLOC_TRIM_THRESHOLD: Final = 64 * 1024 * 1024
_MALLOC_MMAP_THRESHOLD: Final = 32 * 1024 * 1024  # glibc's ceiling on 64-bit
_M_TRIM_THRESHOLD: Final = -1  # mallopt parameter numbers from <malloc.h>
_M_MMAP_THRESHOLD: Final = -3


def _tune_allocator() -> None:
    """Keep freed heap memory for reuse (glibc only; best effort)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(_M_TRIM_THRESHOLD, _MALLOC_TRIM_THRESHOLD)
        libc.mallopt(_M_MMAP_THRESHOLD, _MALLOC_MMAP_THRESHOLD)
    except (ValueError, OSError, AttributeError, ImportError):
        pass


def _is_pipe_or_socket(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _stop_children() -> None:
    """SIGTERM every child process still running (an adapter's leftovers)."""
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return
    for task in tasks:
        try:
            pids = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid), signal.SIGTERM)


# Error messages name types as the wire does, not as Python does.
_WIRE_TYPE_NAMES: Final = {
    type(None): "null",
    bool: "boolean",
    dict: "object",
    list: "array",
    str: "string",
    bytes: "binary",
}


class _Watcher(threading.Thread):
    """Makes sure a hang-up or a signal always reaches the main loop (§5.3, §5.4).

    Two gaps it closes, both without any cost per frame:

    * The host closing our stdout is only seen by a write, which never comes
      while the bridge waits for input or runs a long command.  The thread
      sleeps in poll() on the stdout pipe (POLLERR/POLLHUP need no event mask).
    * A signal that lands just before the main thread enters a blocking
      read() is not seen until the read returns (Python runs handlers between
      bytecodes; the read is not interrupted).  ``signal.set_wakeup_fd`` tells
      the thread about every signal anyway.

    In both cases the thread "nudges" the main thread with SIGTERM every
    ``NUDGE_INTERVAL`` until the loop has ended (``stop()``): each nudge
    interrupts a blocking system call, so the pending handler runs.
    """

    def __init__(self, out_fd: int | None, main_thread: int) -> None:
        super().__init__(name="snakepit-bridge-watch", daemon=True)
        self._out_fd = out_fd
        self._main_thread = main_thread
        self._stop_r, self._stop_w = os.pipe()
        self._signal_r, self._signal_w = os.pipe()
        for fd in (self._signal_r, self._signal_w):
            os.set_blocking(fd, False)
        self._previous_wakeup_fd = -1
        self.host_gone = False

    def start(self) -> None:
        # Called on the main thread (set_wakeup_fd demands it).
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._signal_w, warn_on_full_buffer=False)
        super().start()

    def run(self) -> None:
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        poller.register(self._signal_r, select.POLLIN)
        if self._out_fd is not None:
            poller.register(self._out_fd, 0)
        nudging = False
        while True:
            for fd, events in poller.poll(NUDGE_INTERVAL_MS if nudging else None):
                if fd == self._stop_r:
                    return
                if fd == self._signal_r:
                    with contextlib.suppress(OSError):
                        received = os.read(self._signal_r, 256)
                        nudging = nudging or bool(_TERMINATING.intersection(received))
                elif events & _HANGUP:
                    self.host_gone = True
                    nudging = True
                    poller.unregister(fd)
            if nudging:
                with contextlib.suppress(OSError):
                    signal.pthread_kill(self._main_thread, signal.SIGTERM)

    def stop(self) -> None:
        """End the thread (main thread only) and give back the descriptors."""
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        self.join(timeout=1.0)
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(self._previous_wakeup_fd)
        for fd in (self._stop_r, self._stop_w, self._signal_r, self._signal_w):
            with contextlib.suppress(OSError):
                os.close(fd)


# The methods whose common path the C fast loop runs in their place.
_FAST_LOOP_STANDS_IN_FOR: Final = ("_handle", "_answer", "_write")


def _describe(value: Any) -> str:
    return _WIRE_TYPE_NAMES.get(type(value)) or type(value).__name__


class ProtocolHandler:
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
        unknown = [name for name in codecs if name not in _WIRE_CODECS]
        if unknown or "json" not in codecs:
            raise ValueError(f"codecs must include json and name only json/msgpack: {codecs}")
        if protocol != "auto" and protocol not in codecs:
            raise ValueError(f"protocol {protocol!r} is not among the codecs {tuple(codecs)}")
        self.handler = handler
        self.protocol = protocol
        self.quiet = quiet
        self.max_frame_size = max_frame_size
        self.codecs = tuple(codecs)
        self._codec_cache: dict[str, _JsonWire | _MsgpackWire] = {}
        # Fail now (a clear message at start-up) if the codec asked for is absent.
        self._codec = self._get_codec("json" if protocol == "auto" else protocol)
        self._negotiating = protocol == "auto"
        self._out_fd = -1
        self._in_fd = 0
        self._writing = False
        self._pending_signal = 0
        self._pending_hangup = False
        self._watcher: _Watcher | None = None
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
        _set_pipe_size(self._in_fd)
        _set_pipe_size(self._out_fd)
        _tune_allocator()
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
        self._watcher = _Watcher(
            self._out_fd if _is_pipe_or_socket(self._out_fd) else None, threading.get_ident()
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
            _stop_children()

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
            _stop_children()
            os._exit(0)

    # -- diagnostics ------------------------------------------------------------------

    def _info(self, line: str) -> None:
        if not self.quiet:
            self._complain(line)

    @staticmethod
    def _complain(line: str) -> None:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"[snakepit_bridge] {line}\n")
            sys.stderr.flush()

    # -- codecs -------------------------------------------------------------------

    def _get_codec(self, name: str) -> _JsonWire | _MsgpackWire:
        codec = self._codec_cache.get(name)
        if codec is None:
            codec = self._codec_cache[name] = _WIRE_CODECS[name]()
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
                pieces = self._codec.fast_loop_pieces()
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
            self._write(
                self._error_payload(
                    None, "decode_error", f"payload is not valid {codec.name}: {exc}"
                )
            )
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

    def _answer(self, request: Any) -> bytes:
        """The encoded response to one decoded request."""
        if type(request) is not dict:
            return self._error_payload(
                None, "bad_request", f"a request must be an object, not {_describe(request)}"
            )
        rid = request.get("id")
        if type(rid) is not int and type(rid) is not str:
            what = "no id" if "id" not in request else f"an id of type {_describe(rid)}"
            return self._error_payload(
                None, "bad_request", f"request has {what}; an id is an integer or a string"
            )
        command = request.get("command")
        if type(command) is not str:
            what = (
                "no command"
                if "command" not in request
                else f"a command of type {_describe(command)}"
            )
            return self._error_payload(
                rid, "bad_request", f"request has {what}; command must be a string"
            )
        args = request.get("args", {})
        if type(args) is not dict:
            return self._error_payload(
                rid, "bad_request", f"args must be an object, not {_describe(args)}"
            )
        try:
            result = self.handler.process_command(command, args)
        except Exception as exc:
            return self._command_failed(rid, command, exc)
        try:
            data = self._codec.encode(
                {"id": rid, "success": True, "result": result, "timestamp": utc_timestamp()}
            )
        except Exception as exc:
            return self._unencodable(rid, command, exc)
        if len(data) > MAX_ENCODABLE_LENGTH:
            return self._unencodable(rid, command, None)
        return data

    def _command_failed(self, rid: Any, command: str, exc: Exception) -> bytes:
        """The error response for a command that raised (§4.5)."""
        if isinstance(exc, CommandError):
            return self._error_payload(rid, exc.error_type, str(exc) or type(exc).__name__)
        if not self.quiet:
            self._complain(f"command {command!r} raised {type(exc).__name__}: {exc}")
        return self._error_payload(
            rid,
            "handler_error",
            str(exc) or type(exc).__name__,
            exception=type(exc).__name__,
            traceback="".join(traceback.format_exception(exc)),
        )

    def _unencodable(self, rid: Any, command: str, exc: Exception | None) -> bytes:
        """The error response for a result the codec cannot carry (§4.6);
        ``exc`` None: it encoded, but to more than a frame can hold."""
        if exc is None:
            return self._error_payload(
                rid, "serialization_error", f"the result of {command!r} exceeds 4 GiB"
            )
        return self._error_payload(
            rid,
            "serialization_error",
            f"the result of {command!r} cannot be encoded as {self._codec.name}: {exc}",
        )

    def _error_payload(self, rid: Any, error_type: str, message: str, **extra: str) -> bytes:
        # Five or more keys: a MessagePack envelope never starts with 0x83 (§3.5).
        envelope: dict[str, Any] = {
            "id": rid,
            "success": False,
            "error": message,
            "error_type": error_type,
            "timestamp": utc_timestamp(),
            **extra,
        }
        try:
            return self._codec.encode(envelope)
        except Exception:
            # A message or traceback the codec cannot carry (lone surrogates under
            # MessagePack): send a plain one rather than nothing.
            envelope["error"] = message.encode("ascii", "backslashreplace").decode("ascii")
            for key in extra:
                del envelope[key]
            return self._codec.encode(envelope)

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
