"""The bridge under fuzz: one long-lived stdio bridge per property run, replaced when it breaks.

A :class:`StdioTarget` starts the bridge (through the project's only process
code, :class:`~snakepit_harness.transports.StdioBridge`), runs the codec
negotiation when asked (PROTOCOL.md §3.4), and performs *exchanges*: a list of
frames written as planned (whole, coalesced, byte by byte or split at chosen
offsets), then a sentinel ``ping`` whose answer proves the bridge still serves,
all responses read with a deadline.  After a crash, a hang, garbage on stdout or
broken framing the bridge is killed (its whole process group) and the next
exchange gets a fresh one, so one failure never poisons the next example.

Every exchange records the exact bytes it wrote and how they were cut, which is
what a regression file needs to replay the failure.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Protocol, Self, TypeVar

from ..errors import (
    BridgeCrashed,
    BridgeTimeout,
    CodecError,
    HandshakeFailed,
    HarnessError,
    RemoteProtocolError,
)
from ..protocol import (
    CODEC_MODES,
    NEGOTIATE,
    STARTUP_LIMIT,
    STDIO_EXIT_LIMIT,
    Codec,
    NegotiationFailed,
    Response,
    Selected,
    codec_of_object,
    get_codec,
    init_ping,
)
from ..transports import StdioBridge, describe_returncode
from .defaults import DEFAULT_RESPONSE_TIMEOUT
from .strategies import Expectation, Step, frame
from .values import encode_payload

__all__ = [
    "SCHEDULING_ALLOWANCE",
    "SENTINEL_ID",
    "Exchange",
    "RestartingTarget",
    "StdioTarget",
    "Trouble",
    "sentinel_step",
]

# The first request may take §5.1's STARTUP_LIMIT (20 s); later ones the run's
# response timeout.  On end of input the bridge must exit within §2.5's
# STDIO_EXIT_LIMIT; this allowance over it covers scheduling delays of a busy
# machine, not a slow bridge (a replay of a saved failure gets it too).
SCHEDULING_ALLOWANCE: Final = 2.0
# How long to wait for the bridge to read one write before sending the next:
# only then does a split really reach the bridge as separate reads.  Generous
# for a loaded machine; after one wait runs out (a bridge that stopped
# reading) the rest of the exchange is written without waiting, so a hung
# bridge costs one wait, not one per byte.
_SETTLE_TIMEOUT: Final = 0.5
# The sentinel ping's id: an ordinary positive integer that no drawn request
# uses (drawn positive ids stay below 2^31).
SENTINEL_ID: Final = 2**31
# A bridge that answers far more frames than were sent is stopped being read.
_EXTRA_FRAMES: Final = 4

# The start-up ping of a bridge about to get broken framing (an init ping, §5.1).
_WARM_UP_PING: Final = {
    "id": SENTINEL_ID + 1,
    "command": "ping",
    "args": {"worker_id": "fuzz", "initialization": True},
}

_CODEC_TITLES: Final = {"json": "JSON", "msgpack": "MessagePack"}


def _codec_note(asked: str, answered: str) -> str:
    """Why the run goes on in ``answered`` although ``asked`` was the codec mode."""
    if asked == NEGOTIATE:
        return (
            f"the bridge answered the negotiation frame (§3.4) in {answered}: its command "
            f"line already chose {answered} (e.g. --protocol {answered}), so the run goes on "
            f"under {answered} without negotiating; say --codec {answered}, or start the "
            "bridge without its codec flag to fuzz the negotiation"
        )
    why = (
        "its command line chose it (e.g. --protocol msgpack)"
        if answered == "msgpack"
        # An auto-mode bridge speaks JSON until it is offered a negotiation.
        else "it was started with --protocol json, or in auto mode, which speaks JSON until "
        "a negotiation frame (§3.4) says otherwise"
    )
    how = (
        "start the bridge with --protocol msgpack or use --codec negotiate"
        if asked == "msgpack"
        else "start the bridge without --protocol msgpack"
    )
    return (
        f"the bridge answered a {_CODEC_TITLES[asked]} init ping (§5.1) in "
        f"{_CODEC_TITLES[answered]}: {why}; the run goes on under {answered}, as with "
        f"--codec {answered} (to fuzz {asked}, {how})"
    )


def sentinel_step(codec: str) -> Step:
    """The closing ``ping``: its answer shows the bridge is still serving."""
    request = {"id": SENTINEL_ID, "command": "ping", "args": {}}
    return Step(
        wire=frame(encode_payload(request, codec)),
        label="sentinel ping",
        request=request,
        expect=Expectation("ok"),
    )


@dataclass
class Exchange:
    """What one exchange wrote and what came back."""

    chunks: list[bytes]  # exactly as written, in order (a new write per item)
    responses: list[Any] = field(default_factory=list)
    # A transport-level failure: hang, crash, undecodable output, slow exit.
    trouble: str | None = None
    stderr_tail: bytes = b""
    closed_input: bool = False  # stdin was closed after the chunks (framing damage)

    @property
    def wire(self) -> bytes:
        return b"".join(self.chunks)


class Trouble(HarnessError):
    """The bridge hung, crashed or wrote something that is not a frame."""

    def __init__(self, message: str, stderr_tail: bytes) -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail


class _Closeable(Protocol):
    def close(self) -> None: ...


B = TypeVar("B", bound=_Closeable)


class RestartingTarget(Generic[B]):
    """The life cycle every fuzz target shares: one bridge at a time, killed on discard."""

    _bridge: B | None = None

    def discard(self) -> None:
        """Kill the current bridge (its whole process group); the next use starts afresh."""
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None

    def close(self) -> None:
        self.discard()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class StdioTarget(RestartingTarget[StdioBridge]):
    """A bridge command line, started on demand and restarted after it breaks.

    Start-up is the protocol core's: each bridge gets a
    :class:`~snakepit_harness.protocol.HostConnection` in the codec mode, and in
    ``negotiate`` mode the §3.4 offer and its answer go through it.  A bridge
    whose command line already chose a codec answers the offer in that codec:
    the target then goes on in it without negotiating (a note in :attr:`notes`).
    """

    def __init__(
        self,
        argv: Sequence[str],
        codec_mode: str,
        *,
        response_timeout: float = DEFAULT_RESPONSE_TIMEOUT,
    ) -> None:
        if codec_mode not in CODEC_MODES:
            raise HarnessError(f"unknown codec mode {codec_mode!r}")
        self.argv = list(argv)
        self.codec_mode = codec_mode
        self.response_timeout = response_timeout
        self._codec_name = "json" if codec_mode == NEGOTIATE else codec_mode
        self.starts = 0
        self.served = 0  # exchanges the current bridge has had (0: it is fresh)
        # Once one bridge of this command has answered, later ones get the
        # ordinary response timeout for their first answer too: a failure that
        # restarts the bridge then costs seconds, not §5.1's 20 s.
        self._answered_once = False
        # What start-up noticed and worked around (a codec other than the one asked).
        self.notes: list[str] = []

    # -- life cycle ---------------------------------------------------------

    @property
    def codec_name(self) -> str:
        """The codec in use (after negotiation, the one the bridge selected)."""
        if self.codec_mode == NEGOTIATE and self._bridge is None:
            self.ensure()
        return self._codec_name

    @property
    def codec(self) -> Codec:
        return get_codec(self.codec_name)

    def ensure(self) -> StdioBridge:
        """The live bridge, started (and negotiated with) if there is none."""
        if self._bridge is not None and self._bridge.poll() is None:
            return self._bridge
        bridge = self._start()
        if self.codec_mode == NEGOTIATE:
            answered_in = self._negotiate(bridge)
            if answered_in is not None:
                # The connection is broken (its offer was answered as a
                # request); a fresh bridge in the bridge's own codec is not.
                self._go_on_in(answered_in, _codec_note(NEGOTIATE, answered_in))
                bridge = self._start()
        return bridge

    def check_codec(self) -> None:
        """Find out whether the bridge speaks the codec asked for; go on in its own if not.

        The commonest set-up mistake is a bridge started with one codec
        (``--protocol msgpack``) fuzzed with the other: every answer would then
        fail to decode and every property fail for the harness's reason, not
        the bridge's.  Run once per command line, before the properties.
        In ``negotiate`` mode the negotiation itself tells (see :meth:`ensure`).
        In an explicit mode one init ping (§5.1) goes to a bridge of its own,
        so the bridges under fuzz get exactly the traffic they got before; an
        answer that is an object in the other codec switches this target to
        that codec, with a note.  Anything else (a crash, a hang, garbage) is
        left for the properties to find and report as the bridge's.
        """
        if self.codec_mode == NEGOTIATE:
            self.ensure()
            return
        asked = self.codec_mode
        try:
            probe = StdioBridge(self.argv, codec_mode=asked).start()
        except OSError as exc:
            raise HarnessError(f"cannot start the bridge {self.argv[0]!r}: {exc}") from exc
        with probe:
            try:
                probe.send_bytes(probe.connection.send(init_ping(1, "fuzz")), STARTUP_LIMIT)
                event = probe.read_event(STARTUP_LIMIT)
            except (BridgeTimeout, BridgeCrashed):
                return
        if not isinstance(event, Response):
            return
        try:
            event.decode()
        except CodecError:
            other = codec_of_object(event.payload)
            if other is not None and other != asked:
                self._go_on_in(other, _codec_note(asked, other))

    def _start(self) -> StdioBridge:
        self.discard()
        try:
            bridge = StdioBridge(self.argv, codec_mode=self.codec_mode).start()
        except OSError as exc:
            raise HarnessError(f"cannot start the bridge {self.argv[0]!r}: {exc}") from exc
        self.starts += 1
        self.served = 0
        self._bridge = bridge
        return bridge

    def _go_on_in(self, codec: str, note: str) -> None:
        self.discard()
        self.codec_mode = self._codec_name = codec
        if note not in self.notes:
            self.notes.append(note)

    def _negotiate(self, bridge: StdioBridge) -> str | None:
        """The §3.4 handshake on ``bridge``'s connection; the codec it answered in, if not JSON.

        Returns None once the bridge selected a codec (now the target's), or the
        codec of an answer that shows the bridge's command line chose that one.
        """
        timeout = self.response_timeout if self._answered_once else STARTUP_LIMIT
        try:
            bridge.send_bytes(bridge.connection.send_offer(), STARTUP_LIMIT)
            event = bridge.read_event(timeout)
            if isinstance(event, Selected):
                self._answered_once = True
                self._codec_name = event.codec
                return None
            if isinstance(event, NegotiationFailed) and event.answered_in is not None:
                self._answered_once = True
                return event.answered_in
            bridge.payload_of(event)  # raises what the event stands for
            raise HandshakeFailed("the answer to the offer was read as a response")
        except HandshakeFailed as exc:
            self.discard()
            raise HarnessError(f"the negotiation reply is not usable (§3.4): {exc}") from exc
        except (BridgeTimeout, BridgeCrashed, RemoteProtocolError) as exc:
            self.discard()
            raise HarnessError(f"codec negotiation (§3.4) failed: {exc}") from exc

    # -- exchanges ----------------------------------------------------------

    def _write(
        self, bridge: StdioBridge, chunks: Sequence[bytes], *, settle_last: bool = False
    ) -> None:
        settle = True
        for index, chunk in enumerate(chunks):
            bridge.send_bytes(chunk, self.response_timeout)
            if settle and (settle_last or index + 1 < len(chunks)):
                settle = bridge.wait_stdin_drained(_SETTLE_TIMEOUT)

    # -- single frames (the state machines pace their own reads) ---------------

    def write(self, chunks: Sequence[bytes]) -> None:
        """Write ``chunks`` to the live bridge, each read before the next write goes out.

        Raises :class:`BridgeCrashed` or :class:`BridgeTimeout` when it cannot.
        """
        bridge = self.ensure()
        self.served += 1
        self._write(bridge, chunks, settle_last=True)

    def read_response(self) -> Any:
        """The next decoded response; raises :class:`Trouble` on a hang, crash or bad frame."""
        bridge = self.ensure()
        timeout = self.response_timeout if self._answered_once else STARTUP_LIMIT
        try:
            response = bridge.read_value(self.codec, timeout)
            self._answered_once = True
            return response
        except CodecError as exc:
            problem = f"the bridge wrote a frame that does not decode (§3): {exc}"
        except BridgeTimeout as exc:
            problem = f"HANG: {exc} (the bridge stopped answering)"
        except BridgeCrashed as exc:
            problem = f"CRASH: {exc}"
        except RemoteProtocolError as exc:
            problem = f"FRAMING: {exc} (§2.1)"
        raise Trouble(problem, bridge.stderr_tail())

    def exchange(self, chunks: Sequence[bytes], expected_frames: int) -> Exchange:
        """Write ``chunks`` (the last frame being the sentinel ping) and read to its answer."""
        bridge = self.ensure()
        record = Exchange(list(chunks))
        first = not self._answered_once
        self.served += 1
        codec = self.codec
        try:
            self._write(bridge, chunks)
            limit = expected_frames + _EXTRA_FRAMES
            while len(record.responses) < limit:
                timeout = STARTUP_LIMIT if first else self.response_timeout
                first = False
                try:
                    response = bridge.read_value(codec, timeout)
                except CodecError as exc:
                    record.trouble = f"the bridge wrote a frame that does not decode (§3): {exc}"
                    break
                record.responses.append(response)
                self._answered_once = True
                if isinstance(response, dict) and response.get("id") == SENTINEL_ID:
                    if bridge.unread_stdout:
                        record.trouble = (
                            f"{bridge.unread_stdout} bytes written after the answer to the "
                            "last request (§2.1, §4.7)"
                        )
                    break
        except BridgeTimeout as exc:
            record.trouble = f"HANG: {exc} (the bridge stopped answering)"
        except BridgeCrashed as exc:
            record.trouble = f"CRASH: {exc} (§4.3: a bridge must keep serving)"
        except RemoteProtocolError as exc:
            record.trouble = f"FRAMING: {exc} (§2.1)"
        if record.trouble:
            record.stderr_tail = bridge.stderr_tail()
            self.discard()
        return record

    def exchange_then_eof(self, chunks: Sequence[bytes]) -> Exchange:
        """Write ``chunks`` to a fresh bridge, close its stdin and expect an exit (§2.5)."""
        self.discard()
        bridge = self.ensure()
        self.served += 1
        record = Exchange(list(chunks), closed_input=True)
        codec = self.codec
        limit = STDIO_EXIT_LIMIT + SCHEDULING_ALLOWANCE
        # A start-up ping first (as a replay's fresh bridge gets), so the exit
        # deadline never counts the bridge's start-up time.
        warm_up = self.response_timeout if self._answered_once else STARTUP_LIMIT
        try:
            bridge.request(_WARM_UP_PING, codec, warm_up)
            self._answered_once = True
        except (BridgeTimeout, BridgeCrashed, RemoteProtocolError) as exc:
            record.trouble = f"the start-up ping failed, before any damaged frame: {exc}"
            record.stderr_tail = bridge.stderr_tail()
            self.discard()
            return record
        try:
            # A bridge may exit on an oversize header (§2.3); judged below.
            with contextlib.suppress(BridgeCrashed):
                self._write(bridge, chunks)
            bridge.close_stdin()
            closed_at = time.monotonic()
            while True:
                remaining = closed_at + limit - time.monotonic()
                try:
                    record.responses.append(bridge.read_value(codec, max(remaining, 0.0)))
                except BridgeCrashed:
                    break  # stdout ended: the bridge is exiting
            exit_ = bridge.wait_exit(max(closed_at + limit - time.monotonic(), 0.0))
            if bridge.unread_stdout:
                record.trouble = (
                    f"the bridge ended its output inside a frame ({bridge.unread_stdout} bytes "
                    "of it written): responses must be written whole (§2.6)"
                )
            elif exit_ is None:
                record.trouble = (
                    f"HANG: the bridge did not exit within {STDIO_EXIT_LIMIT:g} s of "
                    "the end of its input (§2.5)"
                )
            elif exit_.signal is not None:
                record.trouble = f"CRASH: the bridge {describe_returncode(exit_.returncode)}"
        except BridgeTimeout:
            record.trouble = (
                f"HANG: the bridge did not exit within {STDIO_EXIT_LIMIT:g} s of the end "
                "of its input (§2.5)"
            )
        except CodecError as exc:
            record.trouble = f"the bridge wrote a frame that does not decode (§3): {exc}"
        except RemoteProtocolError as exc:
            record.trouble = f"FRAMING: {exc} (§2.1)"
        record.stderr_tail = bridge.stderr_tail()
        self.discard()
        return record
