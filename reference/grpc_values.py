"""What crosses the gRPC bridge's wire besides the proto's own fields (PROTOCOL §8.3, §8.4).

Map values go through the protocol core's §8.3 conversions
(:func:`~snakepit_harness.protocol.decode_map`,
:func:`~snakepit_harness.protocol.encode_value`); this module adds what only
the bridge decides: how a command's result becomes the ``result`` map, and how
an exception becomes a failure (``error`` plus the map that carries
``error_type``, since the proto has no field for it).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Mapping
from typing import Any

from snakepit_harness.protocol import UnencodableValue, decode_map, decode_value, encode_value

from .adapter import CommandError, SerializationError

__all__ = [
    "Failure",
    "decode_map",
    "decode_value",
    "encode_map",
    "failure_from",
    "is_stream",
]


def _nested_bytes_as_text(value: Any) -> Any:
    """JSON's ``default`` hook: ``bytes`` nested in a result go as their UTF-8 text.

    (``echo`` of a raw argument returns it inside a dict; binary bytes there
    cannot be JSON, so they are a serialization error.)
    """
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise TypeError("binary bytes nested inside a result cannot be JSON") from None
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encode_entry(value: Any) -> bytes:
    # Compact text, as the bridge has always sent (the harness keeps the stdlib's spacing).
    try:
        return encode_value(value, default=_nested_bytes_as_text, compact=True)
    except UnencodableValue as exc:
        raise SerializationError(f"result is not JSON-encodable: {exc}") from None


def encode_map(result: Any) -> dict[str, bytes]:
    """A command's result as a ``map<string, bytes>`` (a non-dict is the entry ``result``).

    Raises :class:`~snakepit_bridge.SerializationError` for a value JSON cannot carry.
    """
    if isinstance(result, Mapping) and all(isinstance(key, str) for key in result):
        return {key: _encode_entry(value) for key, value in result.items()}
    return {"result": _encode_entry(result)}


class Failure(Exception):
    """A command failed: carries what goes into ``error`` and the result/chunk map."""

    def __init__(self, message: str, details: dict[str, bytes]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def failure_from(exc: BaseException) -> Failure:
    """The failure an exception stands for: a :class:`~snakepit_bridge.CommandError`'s
    own ``error_type``, else ``handler_error`` with the exception's name and traceback."""
    error_type = getattr(exc, "error_type", None)
    message = str(exc) or type(exc).__name__
    details: dict[str, Any]
    if isinstance(error_type, str) and error_type:
        details = {"error_type": error_type}
    else:
        details = {
            "error_type": CommandError.error_type,
            "exception": type(exc).__name__,
            "traceback": "".join(traceback.format_exception(exc)),
        }
    return Failure(message, encode_map(details))


def is_stream(result: Any) -> bool:
    """A command that returns an iterator (a generator) is a streaming command (§8.5)."""
    return isinstance(result, Iterator) and not isinstance(result, str | bytes | Mapping)
