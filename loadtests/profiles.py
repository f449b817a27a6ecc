"""Payload profiles: what one load-test request carries, encoded once, reused for every call.

A profile is a request (``command`` plus ``args``) that the load users send
again and again.  Encoding a megabyte of JSON per request would make the load
generator, not the bridge, the thing we measure, so each profile is encoded
once per codec into a :class:`RequestTemplate`: the wire bytes with a gap where
the request id goes.  A call then costs a few bytes of id and a ``writev``.

Profiles:

* ``ping``: the ``ping`` command with no arguments (the smallest round trip).
* ``small``: ``echo`` with about 100 bytes of arguments.
* ``structured``: ``echo`` with about 1 MB of small objects (a list of records).
* ``binary``: ``echo`` with 1 MiB of bytes: MessagePack ``bin``; a base64
  string under JSON, which cannot carry bytes (PROTOCOL.md §3.1).
* ``file:PATH``: a JSON file holding one request object ``{"command", "args"}``
  or a list of them (sent in turn).  A value ``{"$bytes": "<base64>"}`` anywhere
  in ``args`` stands for bytes, carried as under ``binary``.

The ``raw`` codec is the calibration baseline: the request as MessagePack
bytes (JSON when msgpack is missing), which the raw echo worker sends back
unread.  Response checks are cheap on purpose (see :func:`check_response`).
"""

from __future__ import annotations

import base64
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from snakepit_harness.errors import HarnessError
from snakepit_harness.protocol import HEADER_SIZE, encode_header, get_codec

__all__ = [
    "BUILTIN_PROFILES",
    "ID_BASE",
    "RAW_CODEC",
    "SMALL_RESPONSE_LIMIT",
    "ProfileError",
    "RequestTemplate",
    "bytes_as_base64",
    "check_response",
    "load_profile",
    "make_templates",
    "next_id",
    "profile_names",
    "raw_wire_codec",
]

RAW_CODEC: Final = "raw"

# Request ids start here so that every id has the same encoded width: 10
# decimal digits in JSON, a uint32 (0xce + 4 bytes) in MessagePack.  The id can
# then be patched into pre-encoded bytes without re-encoding the payload.
ID_BASE: Final = 1_000_000_000
_ID_LIMIT: Final = 2**32 - 1  # the largest id that keeps the uint32 width

# Responses up to this size are decoded in full and checked field by field;
# larger ones get the cheap envelope check, so that verifying a 1 MB echo does
# not cost the load generator more CPU than the bridge spent producing it.
SMALL_RESPONSE_LIMIT: Final = 64 * 1024

# Sizes of the built-in profiles (what the issue asks for).
SMALL_TARGET_BYTES: Final = 100
STRUCTURED_TARGET_BYTES: Final = 1_000_000
BINARY_BYTES: Final = 1024 * 1024

_SEED: Final = 20240607  # fixed, so every run sends the same bytes


class ProfileError(HarnessError):
    """A payload profile name or request file is unusable."""


def _small() -> tuple[str, dict[str, Any]]:
    return "echo", {"message": "hello from the load test", "n": 42, "values": [1, 2, 3, 4, 5]}


def _ping() -> tuple[str, dict[str, Any]]:
    return "ping", {}


def _structured() -> tuple[str, dict[str, Any]]:
    rng = random.Random(_SEED)
    # Keys avoid "id" and "success" so the envelope check of large JSON
    # responses cannot be fooled by the payload.
    record_size = len(
        json.dumps(
            {"uid": 0, "name": "item-000000", "score": 0.5, "active": True, "tags": ["a", "b"]},
            separators=(",", ":"),
        )
    )
    count = STRUCTURED_TARGET_BYTES // (record_size + 1)
    items = [
        {
            "uid": i,
            "name": f"item-{i:06d}",
            "score": round(rng.random(), 4),
            "active": i % 3 != 0,
            "tags": ["a", "b"],
        }
        for i in range(count)
    ]
    return "echo", {"items": items}


def _binary() -> tuple[str, dict[str, Any]]:
    return "echo", {"data": random.Random(_SEED).randbytes(BINARY_BYTES)}


BUILTIN_PROFILES: Final[dict[str, Callable[[], tuple[str, dict[str, Any]]]]] = {
    "ping": _ping,
    "small": _small,
    "structured": _structured,
    "binary": _binary,
}

FILE_PREFIX: Final = "file:"


def profile_names() -> list[str]:
    return [*BUILTIN_PROFILES, f"{FILE_PREFIX}PATH"]


def _revive_bytes(value: Any) -> Any:
    """Turn ``{"$bytes": base64}`` markers of a request file into bytes."""
    if isinstance(value, dict):
        if set(value) == {"$bytes"} and isinstance(value["$bytes"], str):
            return base64.b64decode(value["$bytes"], validate=True)
        return {key: _revive_bytes(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_revive_bytes(item) for item in value]
    return value


def _load_file(path: Path) -> list[tuple[str, dict[str, Any]]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"cannot read request file {path}: {exc.strerror}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProfileError(f"request file {path} is not valid JSON: {exc}") from exc
    entries = document if isinstance(document, list) else [document]
    if not entries:
        raise ProfileError(f"request file {path} holds an empty list; give at least one request")
    requests = []
    for index, entry in enumerate(entries):
        where = f"request file {path}, request {index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("command"), str):
            raise ProfileError(f'{where}: expected an object with a string "command"')
        args = entry.get("args", {})
        if not isinstance(args, dict):
            raise ProfileError(f'{where}: "args" must be an object')
        try:
            requests.append((entry["command"], _revive_bytes(args)))
        except ValueError as exc:
            raise ProfileError(f'{where}: a "$bytes" value is not base64: {exc}') from exc
    return requests


def load_profile(name: str) -> list[tuple[str, dict[str, Any]]]:
    """The requests (command, args) of profile ``name``; bytes values as bytes."""
    if name.startswith(FILE_PREFIX):
        return _load_file(Path(name[len(FILE_PREFIX) :]))
    try:
        factory = BUILTIN_PROFILES[name]
    except KeyError:
        known = ", ".join(profile_names())
        raise ProfileError(f"unknown payload profile {name!r}; known: {known}") from None
    return [factory()]


def bytes_as_base64(value: Any) -> Any:
    """Replace bytes, at any depth, by their base64 text (how JSON carries binary)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {key: bytes_as_base64(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [bytes_as_base64(item) for item in value]
    return value


def raw_wire_codec() -> str:
    """The codec the raw baseline's requests are written in (it echoes them unread)."""
    try:
        get_codec("msgpack")
    except HarnessError:
        return "json"
    return "msgpack"


@dataclass(frozen=True)
class RequestTemplate:
    """A request's wire bytes with a fixed-width gap for the id.

    ``parts(request_id)`` returns the frame as buffers for ``os.writev``:
    header, bytes before the id, the id, bytes after it.
    """

    codec: str  # json, msgpack or raw
    command: str
    header: bytes
    before_id: bytes
    after_id: bytes
    encode_id: Callable[[int], bytes]
    # Every id has the same width, so every frame has the same size.
    payload_size: int
    frame_size: int

    def parts(self, request_id: int) -> list[bytes]:
        return [self.header, self.before_id, self.encode_id(request_id), self.after_id]

    def frame(self, request_id: int) -> bytes:
        return b"".join(self.parts(request_id))


def _json_id(request_id: int) -> bytes:
    return b"%d" % request_id


def _msgpack_id(request_id: int) -> bytes:
    return b"\xce" + request_id.to_bytes(4, "big")


_ID_ENCODERS: Final[dict[str, tuple[Callable[[int], bytes], bytes]]] = {
    # codec: (id encoder, the bytes of the key that precedes the id)
    "json": (_json_id, b'"id":'),
    "msgpack": (_msgpack_id, b"\xa2id"),
}


def _template(codec_name: str, label: str, command: str, args: dict[str, Any]) -> RequestTemplate:
    codec = get_codec(codec_name)
    value = bytes_as_base64(args) if codec_name == "json" else args
    # "id" first, so the placeholder found is the envelope's own.
    payload = codec.encode({"id": ID_BASE, "command": command, "args": value})
    encode_id, key = _ID_ENCODERS[codec_name]
    marker = key + encode_id(ID_BASE)
    at = payload.find(marker)
    if at < 0:  # pragma: no cover - both codecs keep dict order
        raise ProfileError(f"cannot locate the request id in the encoded {codec_name} request")
    start = at + len(key)
    end = start + len(encode_id(ID_BASE))
    return RequestTemplate(
        codec=label,
        command=command,
        header=encode_header(len(payload)),
        before_id=payload[:start],
        after_id=payload[end:],
        encode_id=encode_id,
        payload_size=len(payload),
        frame_size=HEADER_SIZE + len(payload),
    )


def make_templates(profile: str, codec: str) -> list[RequestTemplate]:
    """Pre-encode profile ``profile`` for ``codec`` (``json``, ``msgpack`` or ``raw``)."""
    requests = load_profile(profile)
    wire_codec = raw_wire_codec() if codec == RAW_CODEC else codec
    if wire_codec not in _ID_ENCODERS:
        raise ProfileError(f"unknown codec {codec!r}; use json, msgpack or raw")
    return [_template(wire_codec, codec, command, args) for command, args in requests]


def next_id(counter: int) -> int:
    """The request id for the ``counter``-th request (wraps within the fixed width)."""
    return ID_BASE + counter % (_ID_LIMIT - ID_BASE)


# -- response checks ---------------------------------------------------------

_JSON_SUCCESS: Final = re.compile(rb'"success"\s*:\s*(true|false)')
_JSON_ID: Final = re.compile(rb'"id"\s*:\s*(-?\d+|null|"[^"]*")')
_JSON_ERROR: Final = re.compile(rb'"error"\s*:\s*"((?:[^"\\]|\\.){0,200})')


def _check_envelope(envelope: Any, request_id: int) -> str | None:
    if not isinstance(envelope, dict):
        return f"response is not an object but {type(envelope).__name__}"
    if envelope.get("id") != request_id:
        return f"response id {envelope.get('id')!r} does not match request id {request_id}"
    if envelope.get("success") is not True:
        return f"bridge answered success={envelope.get('success')!r}: {envelope.get('error')!r}"
    return None


def _check_large_json(payload: bytes | bytearray, request_id: int) -> str | None:
    found = _JSON_SUCCESS.search(payload)
    if found is None:
        return 'response has no "success" field'
    if found.group(1) != b"true":
        error = _JSON_ERROR.search(payload)
        return "bridge answered success=false: " + (
            error.group(1).decode("utf-8", "replace") if error else "(no error text)"
        )
    id_match = _JSON_ID.search(payload)
    if id_match is None or id_match.group(1) != b"%d" % request_id:
        seen = id_match.group(1).decode("utf-8", "replace") if id_match else "none"
        return f"response id {seen} does not match request id {request_id}"
    return None


def _check_large_msgpack(payload: bytes | bytearray, request_id: int) -> str | None:
    import msgpack

    # Walk only the top-level map, skipping the (large) values we do not need.
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(payload) + 16)
    unpacker.feed(payload)
    envelope: dict[str, Any] = {}
    try:
        entries = unpacker.read_map_header()
        for _ in range(entries):
            key = unpacker.unpack()
            if key in ("id", "success", "error"):
                envelope[key] = unpacker.unpack()
            else:
                unpacker.skip()
    except (ValueError, TypeError, msgpack.OutOfData) as exc:
        return f"response is not a MessagePack map: {exc}"
    return _check_envelope(envelope, request_id)


def check_response(
    codec: str, payload: bytes | bytearray, request: RequestTemplate, request_id: int
) -> str | None:
    """Why ``payload`` is not a successful answer to the request (None when it is).

    The raw baseline echoes the request, so its check is the frame's length.
    Small JSON/MessagePack responses are decoded in full; large ones get an
    envelope check (msgpack: the top-level map with values skipped; JSON: the
    ``success`` and ``id`` fields found by pattern, which the built-in profiles
    never use as keys of their own).
    """
    if codec == RAW_CODEC:
        if len(payload) != request.payload_size:
            return f"raw echo returned {len(payload)} bytes, expected {request.payload_size}"
        return None
    if len(payload) <= SMALL_RESPONSE_LIMIT:
        try:
            envelope = get_codec(codec).decode(bytes(payload))  # small: a cheap copy
        except HarnessError as exc:
            return str(exc)
        return _check_envelope(envelope, request_id)
    if codec == "json":
        return _check_large_json(payload, request_id)
    return _check_large_msgpack(payload, request_id)
