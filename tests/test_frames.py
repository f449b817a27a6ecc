"""The sans-IO frame encoder and incremental decoder (PROTOCOL.md §2)."""

from __future__ import annotations

import struct

import pytest

from snakepit_harness import (
    NEED_DATA,
    FrameDecoder,
    FrameTooLarge,
    LocalProtocolError,
    TruncatedFrame,
    encode_frame,
    encode_header,
)

PAYLOADS = [b"", b"x", b'{"id":1,"command":"ping"}', bytes(range(256)) * 300]


def feed_in_pieces(decoder: FrameDecoder, data: bytes, piece: int) -> list[bytes]:
    frames: list[bytes] = []
    for start in range(0, len(data), piece):
        decoder.feed(data[start : start + piece])
        frames.extend(decoder.frames())
    return frames


def test_header_is_four_bytes_big_endian() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_header(0x01020304) == b"\x01\x02\x03\x04"


@pytest.mark.parametrize("length", [-1, 2**32])
def test_header_refuses_lengths_it_cannot_say(length: int) -> None:
    with pytest.raises(LocalProtocolError):
        encode_header(length)


@pytest.mark.parametrize("piece", [1, 2, 3, 4, 5, 7, 4096, 10**9])
def test_same_frames_whatever_the_split(piece: int) -> None:
    stream = b"".join(encode_frame(p) for p in PAYLOADS)
    decoder = FrameDecoder()
    assert feed_in_pieces(decoder, stream, piece) == PAYLOADS
    assert decoder.at_frame_boundary
    decoder.end_of_input()  # a clean end raises nothing


def test_need_data_until_the_last_byte() -> None:
    wire = encode_frame(b"hello")
    decoder = FrameDecoder()
    for byte in wire[:-1]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is NEED_DATA
    decoder.feed(wire[-1:])
    assert decoder.next_frame() == b"hello"
    assert decoder.next_frame() is NEED_DATA


def test_oversize_header_is_refused_before_any_body_arrives() -> None:
    decoder = FrameDecoder(max_frame_size=1024)
    decoder.feed(struct.pack(">I", 1025))
    with pytest.raises(FrameTooLarge) as caught:
        decoder.next_frame()
    assert caught.value.announced == 1025
    assert caught.value.limit == 1024
    # Nothing of the announced body was buffered: only the header is held.
    assert decoder.buffered == 4


def test_frame_at_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_size=8)
    decoder.feed(encode_frame(b"12345678"))
    assert decoder.next_frame() == b"12345678"


@pytest.mark.parametrize("cut", [1, 3, 4, 6])
def test_end_of_input_inside_a_frame(cut: int) -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"abcdef")[:cut])
    assert decoder.next_frame() is NEED_DATA
    with pytest.raises(TruncatedFrame) as caught:
        decoder.end_of_input()
    assert caught.value.buffered == encode_frame(b"abcdef")[:cut]


def test_consumed_bytes_are_dropped() -> None:
    decoder = FrameDecoder()
    for _ in range(1000):
        decoder.feed(encode_frame(b"x" * 100))
        assert decoder.next_frame() == b"x" * 100
    assert decoder.buffered == 0
    assert len(decoder._buffer) < 1000  # compaction keeps the buffer small
