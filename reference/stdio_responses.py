"""What one request gets back (PROTOCOL §4): envelope checks and answers, without I/O.

:class:`Responses` is the part of the stdio server loop that turns a decoded
request into the encoded response payload: the §4.1 envelope checks
(``bad_request`` with the reason in words), the command call, the success
envelope, and the error envelopes of §4.5 (a command that raised) and §4.6
(a result the codec cannot carry).  :class:`~snakepit_bridge.protocol.ProtocolHandler`
inherits it and does the reading and writing; the C fast loop runs the
common path of :meth:`Responses._answer` in its place and hands the rest back
to these methods.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from typing import Any, Final

from snakepit_harness.errors import CodecError
from snakepit_harness.protocol import MAX_ENCODABLE_LENGTH

from .adapter import BaseCommandHandler, CommandError, utc_timestamp
from .stdio_codecs import WireCodec

__all__ = ["Responses", "describe"]

# Error messages name types as the wire does, not as Python does.
_WIRE_TYPE_NAMES: Final = {
    type(None): "null",
    bool: "boolean",
    dict: "object",
    list: "array",
    str: "string",
    bytes: "binary",
}


def describe(value: Any) -> str:
    """A value's type as the wire names it (``object``, not ``dict``)."""
    return _WIRE_TYPE_NAMES.get(type(value)) or type(value).__name__


class Responses:
    """Builds response payloads for :class:`~snakepit_bridge.protocol.ProtocolHandler`.

    A mixin: the loop owns ``handler``, ``quiet`` and the codec in use, which
    changes once, after a negotiation (§3.4).
    """

    handler: BaseCommandHandler
    quiet: bool
    _codec: WireCodec

    @staticmethod
    def _complain(line: str) -> None:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"[snakepit_bridge] {line}\n")
            sys.stderr.flush()

    def _undecodable(self, exc: Exception) -> bytes:
        """The ``decode_error`` answer to a payload the codec in use cannot read."""
        if isinstance(exc, CodecError):  # the core's codecs word their own errors
            return self._error_payload(None, "decode_error", str(exc))
        return self._error_payload(
            None, "decode_error", f"payload is not valid {self._codec.name}: {exc}"
        )

    def _answer(self, request: Any) -> bytes:
        """The encoded response to one decoded request."""
        if type(request) is not dict:
            return self._error_payload(
                None, "bad_request", f"a request must be an object, not {describe(request)}"
            )
        rid = request.get("id")
        if type(rid) is not int and type(rid) is not str:
            what = "no id" if "id" not in request else f"an id of type {describe(rid)}"
            return self._error_payload(
                None, "bad_request", f"request has {what}; an id is an integer or a string"
            )
        command = request.get("command")
        if type(command) is not str:
            what = (
                "no command"
                if "command" not in request
                else f"a command of type {describe(command)}"
            )
            return self._error_payload(
                rid, "bad_request", f"request has {what}; command must be a string"
            )
        args = request.get("args", {})
        if type(args) is not dict:
            return self._error_payload(
                rid, "bad_request", f"args must be an object, not {describe(args)}"
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
