"""snakepit-harness: test and conformance harness for Snakepit bridges.

The public wire core is re-exported here (sans-IO: no file descriptor in it);
transports, the conformance suite, fuzzing and load tests live in subpackages.
"""

from __future__ import annotations

from .errors import (
    BridgeCrashed,
    BridgeTimeout,
    CodecError,
    FrameTooLarge,
    HarnessError,
    LocalProtocolError,
    RemoteProtocolError,
    TransportError,
    TruncatedFrame,
)
from .protocol import (
    CODEC_NAMES,
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    NEED_DATA,
    SPEC_MIN_FRAME_SIZE,
    Codec,
    CodecUnavailable,
    FrameDecoder,
    JsonCodec,
    MsgpackCodec,
    NeedData,
    UnencodableValue,
    available_codecs,
    encode_frame,
    encode_header,
    get_codec,
)

__version__ = "0.1.0"

__all__ = [
    "CODEC_NAMES",
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "NEED_DATA",
    "SPEC_MIN_FRAME_SIZE",
    "BridgeCrashed",
    "BridgeTimeout",
    "Codec",
    "CodecError",
    "CodecUnavailable",
    "FrameDecoder",
    "FrameTooLarge",
    "HarnessError",
    "JsonCodec",
    "LocalProtocolError",
    "MsgpackCodec",
    "NeedData",
    "RemoteProtocolError",
    "TransportError",
    "TruncatedFrame",
    "UnencodableValue",
    "__version__",
    "available_codecs",
    "encode_frame",
    "encode_header",
    "get_codec",
]
