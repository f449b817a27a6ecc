"""The protocol core: every fact of docs/PROTOCOL.md that code needs, and no I/O.

In the manner of h11, this package is the one place that knows what the bytes
mean; everything that touches a pipe or a socket (the transports) or judges a
bridge (conformance, fuzz, load) builds on it:

* constants: profiles, codec modes, error types, limits, time limits, the
  gRPC ready line, the harness's exit codes;
* framing (§2): :func:`encode_frame`, :class:`FrameDecoder`;
* codecs (§3): :func:`get_codec`, strict JSON (:class:`StrictJson`), MessagePack;
* messages (§3.4, §4, §5): builders for requests, pings and the negotiation
  offer, and checkers that say in words what a response gets wrong;
* :class:`HostConnection`: the host's side of a stdio bridge as a state
  machine: feed it bytes, pull events;
* gRPC map values (§8.3).

The bridge-service profile's facts (§9) are their own public module,
:mod:`snakepit_harness.protocol.bridge_service`.  The modules whose names start
with ``_`` are private; import from here or from that module.
"""

from __future__ import annotations

from ._codecs import (
    CODEC_NAMES,
    Codec,
    CodecUnavailable,
    JsonCodec,
    MsgpackCodec,
    StrictJson,
    UnencodableValue,
    available_codecs,
    codec_of_object,
    get_codec,
    reject_constant,
)
from ._connection import (
    FRAMING_EVIDENCE_BYTES,
    HOST_MAX_FRAME_SIZE,
    Closed,
    ConnectionState,
    Event,
    FramingError,
    HostConnection,
    NegotiationFailed,
    Response,
    Selected,
)
from ._constants import (
    CODEC_MODES,
    ENHANCED_COMMANDS,
    ERLANG_TERM_TAG,
    ERROR_TYPES,
    GRPC_PROFILES,
    GRPC_READY_LIMIT,
    GRPC_SIGTERM_LIMIT,
    HEALTH_INTERVAL,
    HOST_COMMAND_TIMEOUT,
    NEGOTIATE,
    NEGOTIATION_TIMEOUT,
    PROFILE_TRANSPORTS,
    PROFILES,
    READY_PREFIX,
    SHUTDOWN_GRACE,
    STARTUP_LIMIT,
    STARTUP_RECOMMENDED,
    STDIO_EXIT_LIMIT,
    STDIO_PROFILES,
    TRANSPORTS,
    ExitCode,
)
from ._frames import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER,
    HEADER_SIZE,
    MAX_ENCODABLE_LENGTH,
    NEED_DATA,
    SPEC_MIN_FRAME_SIZE,
    FrameDecoder,
    NeedData,
    encode_frame,
    encode_header,
)
from ._messages import (
    NEGOTIATION_OFFER,
    failure_form,
    health_ping,
    init_ping,
    is_ok_result,
    negotiation_offer,
    request,
    response_problems,
    selection_problem,
)
from ._values import decode_map, decode_value, encode_args, encode_value

__all__ = [
    "CODEC_MODES",
    "CODEC_NAMES",
    "DEFAULT_MAX_FRAME_SIZE",
    "ENHANCED_COMMANDS",
    "ERLANG_TERM_TAG",
    "ERROR_TYPES",
    "FRAMING_EVIDENCE_BYTES",
    "GRPC_PROFILES",
    "GRPC_READY_LIMIT",
    "GRPC_SIGTERM_LIMIT",
    "HEADER",
    "HEADER_SIZE",
    "HEALTH_INTERVAL",
    "HOST_COMMAND_TIMEOUT",
    "HOST_MAX_FRAME_SIZE",
    "MAX_ENCODABLE_LENGTH",
    "NEED_DATA",
    "NEGOTIATE",
    "NEGOTIATION_OFFER",
    "NEGOTIATION_TIMEOUT",
    "PROFILES",
    "PROFILE_TRANSPORTS",
    "READY_PREFIX",
    "SHUTDOWN_GRACE",
    "SPEC_MIN_FRAME_SIZE",
    "STARTUP_LIMIT",
    "STARTUP_RECOMMENDED",
    "STDIO_EXIT_LIMIT",
    "STDIO_PROFILES",
    "TRANSPORTS",
    "Closed",
    "Codec",
    "CodecUnavailable",
    "ConnectionState",
    "Event",
    "ExitCode",
    "FrameDecoder",
    "FramingError",
    "HostConnection",
    "JsonCodec",
    "MsgpackCodec",
    "NeedData",
    "NegotiationFailed",
    "Response",
    "Selected",
    "StrictJson",
    "UnencodableValue",
    "available_codecs",
    "codec_of_object",
    "decode_map",
    "decode_value",
    "encode_args",
    "encode_frame",
    "encode_header",
    "encode_value",
    "failure_form",
    "get_codec",
    "health_ping",
    "init_ping",
    "is_ok_result",
    "negotiation_offer",
    "reject_constant",
    "request",
    "response_problems",
    "selection_problem",
]
