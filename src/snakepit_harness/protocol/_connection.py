"""The host's side of a stdio bridge connection, without any I/O (PROTOCOL.md §2-§4).

A :class:`HostConnection` is what Snakepit's port driver would be if it were a
library: it turns values into the bytes to write, and the bytes a bridge wrote
into *events*.  The caller owns the pipes (a thread with ``select``, gevent, a
test feeding bytes by hand) and drives the connection::

    conn = HostConnection("negotiate")
    write(conn.send_offer())
    while (event := conn.next_event()) is NEED_DATA:
        conn.receive_data(read())
    # event is Selected(...) or NegotiationFailed(...)
    write(conn.send(init_ping()))

Events, one at a time from :meth:`HostConnection.next_event`:

* :class:`Selected`: the bridge answered the offer (§3.4); later frames use its codec;
* :class:`Response`: one whole frame, decoded on demand (``event.decode()``);
* :class:`NegotiationFailed`: the answer to the offer is unusable;
* :class:`FramingError`: bytes that cannot be a frame (an announced length over
  the limit, typically text on stdout), with the bytes themselves;
* :class:`Closed`: the bridge's output ended (``receive_data(b"")``), with the
  bytes of any frame it left unfinished;
* ``NEED_DATA``: nothing whole yet.

The announced length is checked against ``max_frame_size`` as soon as a header
is complete, before any of the body is buffered: text on stdout ("hell" reads
as 1.7 GB) becomes a :class:`FramingError`, never an allocation.  The states
and what moves between them are one table, ``_TRANSITIONS``; anything not in
it is the caller's mistake (:class:`~snakepit_harness.errors.LocalProtocolError`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from ..errors import CodecError, FrameTooLarge, LocalProtocolError
from ._codecs import Codec, codec_of_object, get_codec
from ._constants import CODEC_MODES, CODEC_NAMES, NEGOTIATE
from ._frames import NEED_DATA, FrameDecoder, NeedData, encode_frame
from ._messages import negotiation_offer, selection_problem

__all__ = [
    "HOST_MAX_FRAME_SIZE",
    "Closed",
    "ConnectionState",
    "Event",
    "FramingError",
    "HostConnection",
    "NegotiationFailed",
    "Response",
    "Selected",
]

# The largest frame a host accepts from a bridge.  Well above any bridge's
# sensible limit (§2.2 asks for 16 MiB, the reference default is 64 MiB), yet
# small enough that stdout pollution (ASCII text read as a length: b"hell" is
# 1.7 GB) is recognised as garbage instead of being waited for and buffered.
HOST_MAX_FRAME_SIZE: Final = 256 * 1024 * 1024

# Bytes of unframeable output kept in a FramingError: enough to recognise a
# banner, a log line or a traceback, small enough for a report.
FRAMING_EVIDENCE_BYTES: Final = 4096


class ConnectionState(enum.Enum):
    """Where a host connection is."""

    START = "start"  # nothing sent or received yet
    NEGOTIATING = "negotiating"  # the §3.4 offer is out; the next frame is its answer
    READY = "ready"  # the codec is settled: requests and responses flow
    BROKEN = "broken"  # the bridge broke framing or the handshake: read nothing more
    CLOSED = "closed"  # the bridge's output ended


@dataclass(frozen=True, slots=True)
class Selected:
    """The bridge chose ``codec`` in answer to the offer (§3.4)."""

    codec: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Response:
    """One whole frame from the bridge, in the connection's codec at the time."""

    payload: bytes
    codec: Codec

    def decode(self) -> Any:
        """The payload's value; :class:`~snakepit_harness.errors.CodecError` if it has none."""
        return self.codec.decode(self.payload)


@dataclass(frozen=True, slots=True)
class NegotiationFailed:
    """The answer to the offer is not a usable ``protocol_selected`` (§3.4).

    ``answered_in`` names the codec the answer *is* an object in when that is
    not JSON: the bridge was started with an explicit codec (``--protocol
    msgpack``) and answered the offer as an ordinary, undecodable request.
    """

    reason: str
    payload: bytes
    answered_in: str | None = None


@dataclass(frozen=True, slots=True)
class FramingError:
    """Bytes that cannot be a frame (§2.1), from the bad header on."""

    reason: str
    data: bytes
    announced: int | None = None  # the length the header claimed, when that was the problem


@dataclass(frozen=True, slots=True)
class Closed:
    """The bridge's output ended; ``partial`` holds an unfinished frame's bytes, if any."""

    partial: bytes


Event = Selected | Response | NegotiationFailed | FramingError | Closed

# What the host does, as inputs of the transition table beside the event types.
_SEND_OFFER: Final = "send the negotiation offer"
_SEND: Final = "send a request"

# The two events after which a connection is broken; _fail hands back its own.
_Failure = TypeVar("_Failure", FramingError, NegotiationFailed)

_S = ConnectionState
# The states next_event() tests on every frame, bound once: in CPython 3.11
# reading ``ConnectionState.READY`` goes through the enum's descriptors (~0.3
# us a time, against ~0.03 us for a module global).
_NEGOTIATING: Final = ConnectionState.NEGOTIATING
_READY: Final = ConnectionState.READY
_CLOSED: Final = ConnectionState.CLOSED
_TRANSITIONS: Final[dict[tuple[ConnectionState, object], ConnectionState]] = {
    (_S.START, _SEND_OFFER): _S.NEGOTIATING,
    (_S.START, _SEND): _S.READY,
    # A bridge may write before it is asked (a banner, an unsolicited frame):
    # with no offer out, a frame is an ordinary one in the base codec.
    (_S.START, Response): _S.READY,
    (_S.NEGOTIATING, Selected): _S.READY,
    (_S.NEGOTIATING, NegotiationFailed): _S.BROKEN,
    (_S.READY, _SEND): _S.READY,
    (_S.READY, Response): _S.READY,
    # Writing to a bridge whose output is broken or ended is the transport's
    # business (it may still read, or the write fails as a crash).
    (_S.BROKEN, _SEND): _S.BROKEN,
    (_S.CLOSED, _SEND): _S.CLOSED,
    **{(state, FramingError): _S.BROKEN for state in (_S.START, _S.NEGOTIATING, _S.READY)},
    **{(state, Closed): _S.CLOSED for state in (_S.START, _S.NEGOTIATING, _S.READY)},
}


class HostConnection:
    """The host's half of one stdio bridge connection: values out, events in.

    ``codec_mode`` is ``json`` or ``msgpack`` (the bridge was started with that
    codec, §3.4's explicit mode) or ``negotiate`` (JSON until the bridge
    answers :meth:`send_offer`).  ``offered`` are the codecs a negotiation
    offers, the first preferred.
    """

    def __init__(
        self,
        codec_mode: str = "json",
        *,
        max_frame_size: int = HOST_MAX_FRAME_SIZE,
        offered: tuple[str, ...] = ("msgpack", "json"),
    ) -> None:
        if codec_mode not in CODEC_MODES:
            raise LocalProtocolError(
                f"unknown codec mode {codec_mode!r}; known: {', '.join(CODEC_MODES)}"
            )
        unknown = [name for name in offered if name not in CODEC_NAMES]
        if unknown or not offered:
            raise LocalProtocolError(f"cannot offer {list(offered)!r} (§3.4)")
        self.codec_mode = codec_mode
        self.offered = offered
        self.state = ConnectionState.START
        self.codec: Codec = get_codec("json" if codec_mode == NEGOTIATE else codec_mode)
        self._decoder = FrameDecoder(max_frame_size)
        self._eof = False
        self._failure: FramingError | NegotiationFailed | None = None

    @property
    def max_frame_size(self) -> int:
        return self._decoder.max_frame_size

    # -- sending --------------------------------------------------------------

    def send_offer(self) -> bytes:
        """The §3.4 negotiation frame (always JSON); the next frame is read as its answer."""
        if self.codec_mode != NEGOTIATE:
            raise LocalProtocolError(
                f"this connection was opened with the {self.codec_mode} codec: nothing to negotiate"
            )
        self._move(_SEND_OFFER)
        offer = negotiation_offer(self.offered)
        return encode_frame(get_codec("json").encode(offer))

    def send(self, value: Any) -> bytes:
        """``value`` in the connection's codec, framed (UnencodableValue if it cannot be)."""
        return self.send_payload(self.codec.encode(value))

    def send_payload(self, payload: bytes) -> bytes:
        """An already encoded payload, framed."""
        self._move(_SEND)
        return encode_frame(payload)

    def use_codec(self, name: str) -> None:
        """Speak ``name`` from now on (a caller that ran a handshake of its own)."""
        self.codec = get_codec(name)

    # -- receiving ------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes the bridge wrote, in any split; ``b""`` means its output ended."""
        if self._eof:
            raise LocalProtocolError("receive_data after the end of the bridge's output")
        if not data:
            self._eof = True
            return
        self._decoder.feed(data)

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA when no whole frame (or end) has arrived."""
        if self._failure is not None:
            return self._failure
        if self.state is _CLOSED:
            return Closed(b"")
        try:
            payload = self._decoder.next_frame()
        except FrameTooLarge as exc:
            return self._fail(
                FramingError(
                    f"the bridge wrote a header announcing {exc.announced} bytes "
                    f"(over {exc.limit}): not a frame, most likely text on stdout",
                    self._decoder.peek(FRAMING_EVIDENCE_BYTES),
                    exc.announced,
                )
            )
        if payload is NEED_DATA:
            if not self._eof:
                return NEED_DATA
            partial = self._decoder.peek(self._decoder.buffered)
            self._move(Closed)
            return Closed(partial)
        state = self.state
        if state is _NEGOTIATING:
            return self._selection(payload)
        if state is not _READY:
            # READY -> READY is the table's steady state: a load generator
            # reads tens of thousands of responses a second, so the lookup
            # (an Enum hash in Python) is skipped where it cannot change anything.
            self._move(Response)
        return Response(payload, self.codec)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out in an event (a partial frame)."""
        return self._decoder.buffered

    def unread(self, limit: int = FRAMING_EVIDENCE_BYTES) -> bytes:
        """Up to ``limit`` received bytes not yet handed out (for reports)."""
        return self._decoder.peek(limit)

    # -- internals --------------------------------------------------------------

    def _selection(self, payload: bytes) -> Selected | NegotiationFailed:
        try:
            reply = get_codec("json").decode(payload)
        except CodecError as exc:
            return self._fail(self._unreadable_selection(payload, exc))
        problem = selection_problem(reply, self.offered)
        if problem:
            return self._fail(NegotiationFailed(problem, payload))
        self._move(Selected)
        self.codec = get_codec(reply["protocol"])
        return Selected(reply["protocol"], payload)

    @staticmethod
    def _unreadable_selection(payload: bytes, exc: CodecError) -> NegotiationFailed:
        """The answer to the offer is not JSON: a negotiation defect, or a set-up mistake?

        A ``protocol_selected`` in another codec is the bridge's defect (§3.4:
        the answer MUST be JSON).  Any other object in another codec is a
        bridge started with an explicit codec answering the offer as an
        ordinary (undecodable) request: ``answered_in`` names it, and the
        reason names the fix.
        """
        other = codec_of_object(payload)
        if other is None:
            return NegotiationFailed(f"the negotiation answer is not JSON: {exc}", payload)
        reply = get_codec(other).decode(payload)
        if reply.get("type") == "protocol_selected":
            return NegotiationFailed(
                f"the negotiation answer is {other}, not JSON as §3.4 requires", payload
            )
        return NegotiationFailed(
            f"the bridge answered the negotiation offer in {other}, not in JSON: it was "
            f"started with an explicit codec (e.g. --protocol {other}); use --codec {other}, "
            "or start the bridge in auto mode",
            payload,
            other,
        )

    def _fail(self, event: _Failure) -> _Failure:
        self._move(type(event))
        self._failure = event
        return event

    def _move(self, what: object) -> None:
        try:
            self.state = _TRANSITIONS[self.state, what]
        except KeyError:
            name = what if isinstance(what, str) else getattr(what, "__name__", what)
            raise LocalProtocolError(
                f"cannot {name} in state {self.state.value} (a host connection bug)"
            ) from None
