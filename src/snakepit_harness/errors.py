"""One error hierarchy for the harness.

Every error says *who* broke the rules, in the manner of h11's Local/Remote
protocol errors: a :class:`RemoteProtocolError` means the bridge under test sent
something the spec forbids; a :class:`LocalProtocolError` means the harness (or
its user) asked for something that cannot be put on the wire.  Transport errors
describe a bridge process or channel that stopped behaving (timeouts, crashes).
"""

from __future__ import annotations

__all__ = [
    "BridgeCrashed",
    "BridgeTimeout",
    "CodecError",
    "FrameTooLarge",
    "FramingViolation",
    "HandshakeFailed",
    "HarnessError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "TransportError",
    "TruncatedFrame",
]


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class LocalProtocolError(HarnessError):
    """We were asked to send something the protocol cannot carry."""


class RemoteProtocolError(HarnessError):
    """The peer (usually the bridge) sent bytes that break the protocol."""


class CodecError(RemoteProtocolError):
    """A payload did not decode under the codec in use (or had trailing bytes)."""


class FrameTooLarge(RemoteProtocolError):
    """A frame header announced more bytes than the configured maximum."""

    def __init__(self, announced: int, limit: int) -> None:
        super().__init__(f"frame header announces {announced} bytes; the limit is {limit}")
        self.announced = announced
        self.limit = limit


class FramingViolation(RemoteProtocolError):
    """The bridge wrote bytes that cannot be a frame (§2.1); ``data`` holds them."""

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.data = data


class HandshakeFailed(RemoteProtocolError):
    """The bridge answered the start-up negotiation (§3.4) with something unusable."""

    def __init__(self, message: str, payload: bytes = b"") -> None:
        super().__init__(message)
        self.payload = payload


class TruncatedFrame(RemoteProtocolError):
    """Input ended in the middle of a frame."""

    def __init__(self, buffered: bytes) -> None:
        super().__init__(f"input ended inside a frame ({len(buffered)} bytes buffered)")
        self.buffered = buffered


class TransportError(HarnessError):
    """A bridge process or channel stopped behaving; carries its stderr tail."""

    def __init__(self, message: str, stderr_tail: bytes = b"") -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail


class BridgeTimeout(TransportError):
    """The bridge did not answer before the deadline."""


class BridgeCrashed(TransportError):
    """The bridge process exited (or was killed by a signal) unexpectedly."""

    def __init__(
        self,
        message: str,
        stderr_tail: bytes = b"",
        returncode: int | None = None,
    ) -> None:
        super().__init__(message, stderr_tail)
        self.returncode = returncode
