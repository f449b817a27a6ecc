"""In-process properties of the wire core and of the fuzz oracle: no subprocess, every test run.

Frames: whatever the payloads and however the stream is cut, the decoder gives
back exactly the payloads encoded, in order; an oversize header is refused as
soon as it is complete, before any body is buffered.  Codecs: every value the
fuzz strategies claim a codec carries round-trips exactly through it, in every
JSON style.  Oracle: the exact comparison and Python arithmetic behave as the
properties rely on.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from snakepit_harness.fuzz.oracle import expected_compute, match_responses, same_value
from snakepit_harness.fuzz.strategies import (
    Expectation,
    Step,
    frame_steps,
    split_plans,
    valid_steps,
)
from snakepit_harness.fuzz.values import encode_payload, json_styles, values

from snakepit_harness.errors import CodecError, FrameTooLarge, TruncatedFrame
from snakepit_harness.protocol import (
    HEADER_SIZE,
    NEED_DATA,
    FrameDecoder,
    encode_frame,
    encode_header,
    get_codec,
)

CODECS = ("json", "msgpack")

# Generation of nested values is slow on a loaded machine; that is no failure.
relaxed = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
payload_lists = st.lists(st.binary(max_size=300), max_size=8)


@st.composite
def streams_and_cuts(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    payloads = draw(payload_lists)
    stream = b"".join(encode_frame(p) for p in payloads)
    plan = draw(split_plans(len(stream)))
    return payloads, plan.chunks(stream)


@relaxed
@given(streams_and_cuts())
def test_decoder_returns_the_payloads_however_the_stream_is_cut(
    case: tuple[list[bytes], list[bytes]],
) -> None:
    payloads, chunks = case
    decoder = FrameDecoder()
    out: list[bytes] = []
    for chunk in chunks:
        decoder.feed(chunk)
        out += decoder.frames()
    assert out == payloads
    assert decoder.at_frame_boundary
    decoder.end_of_input()  # a clean end raises nothing


@relaxed
@given(payload_lists)
def test_byte_by_byte_equals_whole(payloads: list[bytes]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for index in range(len(stream)):
        decoder.feed(stream[index : index + 1])
        out += decoder.frames()
    assert out == payloads


@relaxed
@given(st.binary(min_size=1, max_size=200), st.data())
def test_a_cut_inside_a_frame_is_a_truncation(payload: bytes, data: st.DataObject) -> None:
    wire = encode_frame(payload)
    cut = data.draw(st.integers(1, len(wire) - 1))
    decoder = FrameDecoder()
    decoder.feed(wire[:cut])
    assert decoder.next_frame() is NEED_DATA
    with pytest.raises(TruncatedFrame):
        decoder.end_of_input()


@relaxed
@given(st.integers(0, 4096), st.integers(0, 2**32 - 1), st.binary(max_size=64))
def test_the_limit_is_checked_on_the_header_alone(limit: int, announced: int, body: bytes) -> None:
    decoder = FrameDecoder(max_frame_size=limit)
    decoder.feed(encode_header(announced) + body)
    if announced > limit:
        with pytest.raises(FrameTooLarge) as raised:
            decoder.next_frame()
        assert raised.value.announced == announced
        assert decoder.buffered == HEADER_SIZE + len(body)  # nothing more was read or kept
    else:
        frame = decoder.next_frame()
        assert frame == (body[:announced] if len(body) >= announced else NEED_DATA)


@pytest.mark.parametrize("codec", CODECS)
@settings(relaxed, max_examples=60)
@given(data=st.data())
def test_every_generated_value_round_trips_through_its_codec(
    codec: str, data: st.DataObject
) -> None:
    value = data.draw(values(codec))
    style = data.draw(json_styles())
    decoded = get_codec(codec).decode(encode_payload({"v": value}, codec, style))
    assert same_value({"v": value}, decoded, codec) is None


@pytest.mark.parametrize("codec", CODECS)
@relaxed
@given(payload=st.binary(max_size=200))
def test_decoding_garbage_only_ever_raises_codec_error(codec: str, payload: bytes) -> None:
    with contextlib.suppress(CodecError):
        get_codec(codec).decode(payload)


@pytest.mark.parametrize("codec", CODECS)
@settings(relaxed, max_examples=50)
@given(data=st.data())
def test_valid_steps_are_valid_requests_with_unique_ids(codec: str, data: st.DataObject) -> None:
    steps = data.draw(valid_steps("enhanced", codec, max_size=6))
    decoder = FrameDecoder()
    decoder.feed(b"".join(s.wire for s in steps))
    decoded = [get_codec(codec).decode(p) for p in decoder.frames()]
    assert len(decoded) == len(steps)
    for step, request in zip(steps, decoded, strict=True):
        assert isinstance(request, dict) and isinstance(request["command"], str)
        assert same_value(step.request, request, codec) is None
    keys = [(type(s.request_id), s.request_id) for s in steps]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("codec", CODECS)
@settings(relaxed, max_examples=50)
@given(data=st.data())
def test_damaged_frames_are_never_valid_requests(codec: str, data: st.DataObject) -> None:
    for step in data.draw(frame_steps("v2", codec)):
        if step.request is not None:
            continue
        if step.breaks_framing:
            decoder = FrameDecoder()
            decoder.feed(step.wire)
            try:
                decoder.frames()
                decoder.end_of_input()
            except (TruncatedFrame, FrameTooLarge):
                continue
            pytest.fail(f"{step.label} decodes as whole frames")
        decoder = FrameDecoder()
        decoder.feed(step.wire)
        (payload,) = decoder.frames()
        try:
            value = get_codec(codec).decode(payload)
        except CodecError:
            continue
        assert not (
            isinstance(value, dict)
            and isinstance(value.get("command"), str)
            and isinstance(value.get("args", {}), dict)
            and "id" in value
            and step.loose_id is None
        ), step.label


# -- the oracle -----------------------------------------------------------------

SAME_VALUE_CASES: list[tuple[Any, Any, str, bool]] = [
    (1, 1, "json", True),
    (2.0, 2, "json", True),  # one JSON number type
    (2.0, 2, "msgpack", False),  # MessagePack keeps int and float apart
    (-0.0, 0.0, "json", False),
    (-0.0, 0, "json", False),
    (2**53 + 1, float(2**53), "json", False),
    (True, 1, "json", False),
    (math.nan, math.nan, "msgpack", True),
    (b"x", "x", "msgpack", False),
    ({"a": [1]}, {"a": [1], "b": 2}, "json", False),
    ("\u2028", "\n", "json", False),
    ("\U0001f600", "\U0001f600", "json", True),
]


@pytest.mark.parametrize(("expected", "got", "codec", "same"), SAME_VALUE_CASES)
def test_same_value_is_exact(expected: Any, got: Any, codec: str, same: bool) -> None:
    assert (same_value(expected, got, codec) is None) is same


COMPUTE_CASES: list[tuple[str, Any, Any, str, tuple[bool, Any]]] = [
    ("add", 1, 2, "json", (True, 3)),
    ("divide", 1, 2, "json", (True, 0.5)),
    ("divide", 1, 0, "json", (False, "division by zero")),
    ("divide", 1.0, -0.0, "msgpack", (False, "division by zero")),
    ("add", "a", "b", "json", (False, "a non-numeric operand")),
    ("multiply", None, 2, "json", (False, "a non-numeric operand")),
    ("power", 2, 3, "json", (False, "unknown operation 'power'")),
    (
        "multiply",
        1e308,
        10.0,
        "json",
        (False, "a non-finite result, which JSON cannot carry (§4.6)"),
    ),
    ("multiply", 1e308, 10.0, "msgpack", (True, math.inf)),
    (
        "multiply",
        2**64 - 1,
        2,
        "msgpack",
        (False, "an integer result outside MessagePack's 64-bit range (§4.6)"),
    ),
    ("add", 2**53, 1, "json", (True, 2**53 + 1)),
]


@pytest.mark.parametrize(("op", "a", "b", "codec", "want"), COMPUTE_CASES)
def test_compute_oracle_is_python_arithmetic(
    op: str, a: Any, b: Any, codec: str, want: tuple[bool, Any]
) -> None:
    assert expected_compute(op, a, b, codec) == want


def _echo_step(request_id: Any, args: dict[str, Any]) -> Step:
    request = {"id": request_id, "command": "echo", "args": args}
    return Step(wire=b"", label="echo", request=request, expect=Expectation("echo", args))


def _answer(request_id: Any, echoed: Any) -> dict[str, Any]:
    return {
        "id": request_id,
        "success": True,
        "result": {"status": "ok", "echoed": echoed},
        "timestamp": "2026-01-01T00:00:00Z",
    }


MALFORMED = Step(wire=b"", label="garbage", loose_id=-5)
NULL_ERROR = {"id": None, "success": False, "error": "bad", "timestamp": "t"}

MATCH_CASES: list[tuple[str, list[Step], list[Any], bool]] = [
    ("in order", [_echo_step(1, {}), _echo_step(2, {})], [_answer(1, {}), _answer(2, {})], True),
    ("swapped", [_echo_step(1, {}), _echo_step(2, {})], [_answer(2, {}), _answer(1, {})], False),
    ("missing", [_echo_step(1, {}), _echo_step(2, {})], [_answer(1, {})], False),
    ("duplicate", [_echo_step(1, {})], [_answer(1, {}), _answer(1, {})], False),
    ("wrong value", [_echo_step(1, {"x": -0.0})], [_answer(1, {"x": 0.0})], False),
    ("malformed answered", [MALFORMED, _echo_step(1, {})], [NULL_ERROR, _answer(1, {})], True),
    ("malformed silent", [MALFORMED, _echo_step(1, {})], [_answer(1, {})], True),
    ("id type", [_echo_step(1, {})], [_answer("1", {})], False),
]


@pytest.mark.parametrize(("name", "steps", "responses", "ok"), MATCH_CASES)
def test_responses_are_attributed_in_order(
    name: str, steps: list[Step], responses: list[Any], ok: bool
) -> None:
    assert (not match_responses(steps, responses, "json")) is ok, name
