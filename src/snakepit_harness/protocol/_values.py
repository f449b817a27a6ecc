"""Values inside the gRPC profile's ``map<string, bytes>`` fields (PROTOCOL.md §8.3).

Each map entry holds one value as UTF-8 JSON text; raw bytes that are not
JSON stand for themselves (binary data).  The harness, the reference gRPC
bridge and the load tests all convert through these functions, so the rule
is written once.  ``encode_value`` takes a ``default`` hook for values JSON
has no type for (the reference bridge turns nested UTF-8 bytes into text).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._codecs import StrictJson, UnencodableValue

__all__ = ["decode_map", "decode_value", "encode_args", "encode_value"]

# The harness writes the stdlib's default separators (what it always sent);
# a bridge asks for compact text.  Decoding does not care.
_UTF8_JSON = StrictJson(ascii=False, compact=False)
_ENCODERS: dict[tuple[Callable[[Any], Any] | None, bool], StrictJson] = {}


def encode_value(
    value: Any, default: Callable[[Any], Any] | None = None, *, compact: bool = False
) -> bytes:
    """One map value: ``bytes`` go raw, anything else as strict UTF-8 JSON (§8.3).

    Raises :class:`~snakepit_harness.protocol.UnencodableValue` for a value
    JSON cannot carry (a set, NaN, an object ``default`` refuses).
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    encoder = _UTF8_JSON
    if default is not None or compact:
        key = (default, compact)
        encoder = _ENCODERS.get(key) or _ENCODERS.setdefault(
            key, StrictJson(ascii=False, default=default, compact=compact)
        )
    try:
        # A lone surrogate has no UTF-8 form: UnicodeEncodeError, a ValueError.
        return encoder.dumps(value).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise UnencodableValue(f"cannot send {type(value).__name__} as JSON: {exc}") from None


def encode_args(args: Mapping[str, Any] | None) -> dict[str, bytes]:
    """A whole map: every value through :func:`encode_value`."""
    return {key: encode_value(value) for key, value in (args or {}).items()}


def decode_value(raw: bytes) -> Any:
    """A map value's JSON meaning, or the raw bytes when it is not UTF-8 JSON (§8.3)."""
    try:
        return _UTF8_JSON.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError, JSONDecodeError
        return bytes(raw)


def decode_map(entries: Mapping[str, bytes]) -> dict[str, Any]:
    """A whole map: every value through :func:`decode_value`."""
    return {key: decode_value(value) for key, value in entries.items()}
