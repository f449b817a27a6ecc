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

from ..errors import CodecError, LocalProtocolError

__all__ = [
    "CODEC_NAMES",
    "Codec",
    "CodecUnavailable",
    "JsonCodec",
    "MsgpackCodec",
    "StrictJson",
    "UnencodableValue",
    "available_codecs",
    "codec_of_object",
    "get_codec",
    "reject_constant",
]


class UnencodableValue(LocalProtocolError):
    """A value that the codec cannot represent (NaN under JSON, a set, ...)."""


class CodecUnavailable(LocalProtocolError):
    """The codec's library is not installed."""


class Codec(Protocol):
    """What every codec offers: a name and two pure functions."""

    name: str

    def encode(self, value: Any) -> bytes: ...

    def decode(self, payload: bytes | bytearray | memoryview) -> Any: ...


def reject_constant(token: str) -> Any:
    """``parse_constant`` hook: NaN, Infinity and -Infinity are not JSON (§3.1)."""
    raise ValueError(f"non-standard JSON token {token!r}")


class StrictJson:
    """Strict JSON text <-> values (§3.1), with the encoder and decoder built once.

    ``json.dumps``/``json.loads`` with options build a new encoder or decoder
    per call, which is most of a small message's cost; every strict-JSON user
    in the tree (the harness's codec, the reference bridges, the gRPC value
    conversions) shares this one.  Errors are the stdlib's own (``TypeError``,
    ``ValueError``, ``RecursionError``): each caller says what they mean.

    ``ascii=True`` escapes every non-ASCII character, so the text is valid
    UTF-8 even for strings holding lone surrogates; ``default`` is the hook for
    values JSON has no type for; ``compact=False`` writes the stdlib's default
    separators (``", "`` and ``": "``).
    """

    def __init__(
        self,
        *,
        ascii: bool = True,
        default: Callable[[Any], Any] | None = None,
        compact: bool = True,
    ) -> None:
        item, key = (",", ":") if compact else (", ", ": ")
        encoder = json.JSONEncoder(
            allow_nan=False, separators=(item, key), ensure_ascii=ascii, default=default
        )
        self.decoder = json.JSONDecoder(parse_constant=reject_constant)
        self.loads: Callable[[str], Any] = self.decoder.decode
        self.dumps: Callable[[Any], str] = encoder.encode
        # JSONEncoder.encode builds a C encoder on every call; build it once.
        # (No circular-reference markers: a cycle ends in RecursionError, an
        # unencodable value all the same.)  The C encoder's signature is
        # CPython's private business, so check it and fall back quietly.
        self.c_encoder: Any = None
        make = getattr(json.encoder, "c_make_encoder", None)
        if make is None:
            return
        quote = json.encoder.encode_basestring_ascii if ascii else json.encoder.encode_basestring
        try:
            c_encoder = make(None, encoder.default, quote, None, key, item, False, False, False)
            sample = "".join(c_encoder({"k": [1, 2.5, None, True, "\u00e9"]}, 0))
        except Exception:
            return
        escaped = "\\u00e9" if ascii else "\u00e9"
        expected = '{"k"' + key + "[1" + item + "2.5" + item + "null" + item + "true" + item
        expected += '"' + escaped + '"]}'
        if sample == expected:
            self.dumps = lambda value: "".join(c_encoder(value, 0))
            self.c_encoder = c_encoder


class JsonCodec:
    """Strict JSON: UTF-8, no non-finite numbers, ASCII output (always valid UTF-8)."""

    name = "json"

    def __init__(self) -> None:
        self._json = StrictJson()

    def encode(self, value: Any) -> bytes:
        try:
            return self._json.dumps(value).encode("ascii")
        except (TypeError, ValueError) as exc:
            raise UnencodableValue(f"cannot encode as JSON: {exc}") from exc
        except RecursionError as exc:
            raise UnencodableValue("cannot encode as JSON: nested too deeply") from exc

    def decode(self, payload: bytes | bytearray | memoryview) -> Any:
        try:
            return self._json.loads(str(payload, "utf-8"))
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
        # packb, not a shared Packer: codec instances are shared between
        # threads (``check`` runs configurations in parallel), and a Packer
        # keeps a buffer.
        self._packb: Callable[..., bytes] = msgpack.packb

    def encode(self, value: Any) -> bytes:
        try:
            return self._packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnencodableValue(f"cannot encode as MessagePack: {exc}") from exc

    def decode(self, payload: bytes | bytearray | memoryview) -> Any:
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


def codec_of_object(payload: bytes | bytearray | memoryview) -> str | None:
    """The codec under which ``payload`` is one object (a dict), if exactly one is.

    A frame in the wrong codec is the commonest set-up mistake (a bridge started
    with ``--protocol msgpack`` while the host speaks JSON, or the reverse);
    this lets every caller name the fix instead of reporting garbage.  A JSON
    text never decodes as a MessagePack map (``{`` is a positive fixint with
    trailing bytes) and a MessagePack map is never UTF-8 JSON, so the answer is
    unambiguous for objects.
    """
    found = None
    for name in available_codecs():
        try:
            value = get_codec(name).decode(payload)
        except CodecError:
            continue
        if isinstance(value, dict):
            if found is not None:
                return None
            found = name
    return found


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
