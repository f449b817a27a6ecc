"""The strict JSON and safe MessagePack codecs (PROTOCOL.md §3)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from snakepit_harness import CodecError, UnencodableValue, available_codecs, get_codec
from snakepit_harness.errors import LocalProtocolError

msgpack = pytest.importorskip("msgpack", reason="the msgpack extra is not installed")

ROUND_TRIP_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**53 + 1,
    -(2**63),
    1.5,
    -0.0,
    "",
    "snake 🐍 \u00e9",
    [1, [2, [3, []]]],
    {"a": {"b": [None, False]}},
]


@pytest.mark.parametrize("codec_name", ["json", "msgpack"])
@pytest.mark.parametrize("value", ROUND_TRIP_VALUES, ids=repr)
def test_round_trip(codec_name: str, value: Any) -> None:
    codec = get_codec(codec_name)
    assert codec.decode(codec.encode(value)) == value


def test_json_big_integers_stay_exact() -> None:
    codec = get_codec("json")
    assert codec.decode(codec.encode(2**70)) == 2**70


@pytest.mark.parametrize(
    "payload",
    [b"NaN", b"[Infinity]", b'{"a": -Infinity}', b"\xff", b'{"a":1} x', b"", b"\xef\xbb\xbf{}"],
    ids=repr,
)
def test_json_refuses_non_strict_input(payload: bytes) -> None:
    with pytest.raises(CodecError):
        get_codec("json").decode(payload)


@pytest.mark.parametrize("value", [math.nan, math.inf, {1, 2}, b"bytes", object()], ids=repr)
def test_json_refuses_unencodable_values(value: Any) -> None:
    with pytest.raises(UnencodableValue):
        get_codec("json").encode(value)


def test_json_output_is_ascii_even_for_lone_surrogates() -> None:
    wire = get_codec("json").encode({"s": "\ud800"})
    assert wire.isascii()
    assert get_codec("json").decode(wire) == {"s": "\ud800"}


def test_msgpack_keeps_str_and_bin_apart() -> None:
    codec = get_codec("msgpack")
    decoded = codec.decode(codec.encode({"text": "abc", "blob": b"abc"}))
    assert decoded == {"text": "abc", "blob": b"abc"}
    assert type(decoded["blob"]) is bytes
    assert type(decoded["text"]) is str


@pytest.mark.parametrize(
    "payload",
    [
        b"\x91\x01\x02",  # trailing byte after a complete array
        b"\x92\x01",  # truncated array
        b"\xc1",  # reserved type byte
        b"\xa2\xff\xfe",  # str that is not UTF-8
        b"\x81\x01\x02",  # integer map key
        b"",
        b"\xdd\xff\xff\xff\xff",  # array claiming 4 billion items in a 5-byte payload
    ],
    ids=repr,
)
def test_msgpack_refuses_malformed_payloads(payload: bytes) -> None:
    with pytest.raises(CodecError):
        get_codec("msgpack").decode(payload)


@pytest.mark.parametrize("value", [{1, 2}, object(), 2**64], ids=repr)
def test_msgpack_refuses_unencodable_values(value: Any) -> None:
    with pytest.raises(UnencodableValue):
        get_codec("msgpack").encode(value)


def test_registry() -> None:
    assert available_codecs() == ["json", "msgpack"]
    assert get_codec("json") is get_codec("json")
    with pytest.raises(LocalProtocolError, match="unknown codec"):
        get_codec("yaml")
