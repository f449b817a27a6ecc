"""Payload codecs (PROTOCOL.md §3) and their registry, without any I/O.

* ``json``: strict RFC 8259 both ways: UTF-8 only, no ``NaN``/``Infinity``
  tokens accepted or produced (§3.1, and Snakepit's own decoder rejects them).
* ``msgpack``: exactly one object per payload, no trailing bytes (§3.2),
  ``str`` and ``bin`` kept apart, string map keys, and the unpacker's size
  limits bounded by the payload length so a hostile payload cannot make us
  allocate more than the frame already cost.

``msgpack`` is an optional dependency: :func:`get_codec` raises a clear error
naming the extra to install when it is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final, Protocol

from .errors import CodecError, LocalProtocolError

__all__ = [
    "CODEC_NAMES",
    "Codec",
    "CodecUnavailable",
    "JsonCodec",
    "MsgpackCodec",
    "UnencodableValue",
    "available_codecs",
    "get_codec",
]


class UnencodableValue(LocalProtocolError):
    """A value that the codec cannot represent (NaN under JSON, a set, ...)."""


class CodecUnavailable(LocalProtocolError):
    """The codec's library is not installed."""


class Codec(Protocol):
    """What every codec offers: a name and two pure functions."""

    name: str

    def encode(self, value: Any) -> bytes: ...

    def decode(self, payload: bytes) -> Any: ...


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON token {token!r}")


class JsonCodec:
    """Strict JSON: UTF-8, no non-finite numbers, ASCII output (always valid UTF-8)."""

    name = "json"

    def encode(self, value: Any) -> bytes:
        try:
            # ensure_ascii keeps lone surrogates encodable as \\u escapes.
            return json.dumps(value, allow_nan=False, separators=(",", ":")).encode("ascii")
        except (TypeError, ValueError) as exc:
            raise UnencodableValue(f"cannot encode as JSON: {exc}") from exc
        except RecursionError as exc:
            raise UnencodableValue("cannot encode as JSON: nested too deeply") from exc

    def decode(self, payload: bytes) -> Any:
        try:
            text = payload.decode("utf-8")
            return json.loads(text, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise CodecError(f"invalid JSON payload: {exc}") from exc
        except RecursionError as exc:
            raise CodecError("invalid JSON payload: nested too deeply") from exc


class MsgpackCodec:
    """Safe MessagePack (msgpack-python with explicit options)."""

    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:  # pragma: no cover - exercised without the extra
            raise CodecUnavailable(
                "the msgpack codec needs the 'msgpack' package: "
                "pip install 'snakepit-harness[msgpack]'"
            ) from exc
        self._msgpack = msgpack
        self._packb: Callable[..., bytes] = msgpack.packb

    def encode(self, value: Any) -> bytes:
        try:
            return self._packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnencodableValue(f"cannot encode as MessagePack: {exc}") from exc

    def decode(self, payload: bytes) -> Any:
        size = len(payload)
        try:
            return self._msgpack.unpackb(
                payload,
                raw=False,  # str stays str; invalid UTF-8 is an error
                strict_map_key=True,
                use_list=True,
                # No container or string can claim more entries than the
                # payload has bytes; this keeps allocation bounded by the frame.
                max_str_len=size,
                max_bin_len=size,
                max_array_len=size,
                max_map_len=size // 2,
                max_ext_len=size,
            )
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            # ExtraData, FormatError, StackError and OutOfData are all ValueErrors.
            raise CodecError(f"invalid MessagePack payload: {exc}") from exc


_FACTORIES: Final[dict[str, Callable[[], Codec]]] = {
    JsonCodec.name: JsonCodec,
    MsgpackCodec.name: MsgpackCodec,
}

CODEC_NAMES: Final = tuple(_FACTORIES)

_instances: dict[str, Codec] = {}


def get_codec(name: str) -> Codec:
    """Return the codec called ``name`` (``json`` or ``msgpack``)."""
    codec = _instances.get(name)
    if codec is None:
        try:
            factory = _FACTORIES[name]
        except KeyError:
            known = ", ".join(CODEC_NAMES)
            raise LocalProtocolError(f"unknown codec {name!r}; known codecs: {known}") from None
        codec = _instances[name] = factory()
    return codec


def available_codecs() -> list[str]:
    """Names of the codecs whose libraries are importable here."""
    names = []
    for name in CODEC_NAMES:
        try:
            get_codec(name)
        except CodecUnavailable:
            continue
        names.append(name)
    return names
