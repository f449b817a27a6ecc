"""The payload codecs of the stdio server loop (PROTOCOL §3), with the C fast loop's hooks.

Each codec here wraps the protocol core's own rules (strict JSON from
:class:`~snakepit_harness.protocol.StrictJson`, bounded MessagePack decoding
from :class:`~snakepit_harness.protocol.MsgpackCodec`) in what the bridge's
loop needs on top: an encoder built for speed (a reused ``msgpack.Packer``),
``recover()`` after a failed encode, and ``fast_loop_pieces()``, the objects
the optional C loop (``_fastloop.c``) calls in place of these methods.
"""

from __future__ import annotations

import json.scanner
from collections.abc import Callable
from types import ModuleType
from typing import Any, Final, TypeAlias

from snakepit_harness.protocol import CodecUnavailable, MsgpackCodec, StrictJson

__all__ = ["WIRE_CODECS", "CodecNotAvailable", "JsonWire", "MsgpackWire", "WireCodec"]

# The name the bridges have always raised (bridge_cli catches it at start-up):
# the core's error, so a missing msgpack reads the same everywhere.
CodecNotAvailable: TypeAlias = CodecUnavailable

# (codec number, decode, encode) as _fastloop.serve takes them.
FastLoopPieces: TypeAlias = tuple[int, Any, Any]


class JsonWire:
    """Strict JSON (§3.1) through the core's prebuilt encoder and decoder.

    Decoding raises the standard library's errors (the loop names them in its
    ``decode_error`` answer); the encoded text is pure ASCII, hence valid UTF-8
    even for strings holding lone surrogates.
    """

    name = "json"

    def __init__(self) -> None:
        self._json = StrictJson()
        self._loads = self._json.loads
        self._dumps = self._json.dumps

    def decode(self, payload: memoryview) -> Any:
        return self._loads(str(payload, "utf-8"))

    def encode(self, value: Any) -> bytes:
        return self._dumps(value).encode("ascii")

    def recover(self) -> None:
        """Nothing to reset after a failed encode (see MsgpackWire.recover)."""

    def fast_loop_pieces(self, fastloop: ModuleType) -> FastLoopPieces | None:
        """The stdlib's C scanner and C encoder, which the C loop falls back on for
        what its own JSON reader and writer leave to the stdlib; None where this
        Python lacks them (the Python loop then serves every frame)."""
        scanner_type: Any = getattr(json.scanner, "c_make_scanner", None)
        scan_once = getattr(self._json.decoder, "scan_once", None)  # set by JSONDecoder, untyped
        if self._json.c_encoder is None or scanner_type is None:
            return None
        if not isinstance(scan_once, scanner_type):
            return None
        return fastloop.CODEC_JSON, scan_once, self._json.c_encoder


class MsgpackWire:
    """Safe MessagePack (§3.2): the core's bounded decoder, a reused packer to encode."""

    name = "msgpack"

    def __init__(self) -> None:
        self._core = MsgpackCodec()  # raises CodecUnavailable without the msgpack package
        import msgpack

        self._msgpack = msgpack
        self._packer = msgpack.Packer(use_bin_type=True)
        self.decode: Callable[[memoryview], Any] = self._core.decode

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

    def fast_loop_pieces(self, fastloop: ModuleType) -> FastLoopPieces | None:
        """Plain ``unpackb``: since msgpack 1.0 its defaults are the limits the
        core's decoder spells out (every length bounded by the payload's, str/bin
        apart, string map keys)."""
        return fastloop.CODEC_MSGPACK, self._msgpack.unpackb, self._packer.pack


WireCodec: TypeAlias = JsonWire | MsgpackWire

WIRE_CODECS: Final[dict[str, Callable[[], WireCodec]]] = {
    JsonWire.name: JsonWire,
    MsgpackWire.name: MsgpackWire,
}
