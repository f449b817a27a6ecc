"""The optional C fast loop (``snakepit_bridge._fastloop``) against the Python loop.

The fast loop must be invisible: for every frame, good or bad, a bridge answers
the same with it as with ``SNAKEPIT_BRIDGE_PURE_PYTHON=1``.  A corpus of frames
covering every outcome (success, each kind of bad request, handler errors,
unencodable results, frames too big for the fast loop, negotiation) is sent to
both, pipelined in one write and again split into small writes, and the
answers are compared field by field (the timestamp, uptime, pid and traceback
paths aside).  Its JSON writer is checked against ``json.dumps`` with
hypothesis, its timestamp against the Python one.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from snakepit_bridge import adapter, protocol

from snakepit_harness import get_codec
from snakepit_harness.protocol import encode_frame
from snakepit_harness.transports import StdioBridge

from .adapters.support import TIMEOUT, V1, V2, adapter_env, negotiate

fastloop = protocol._fastloop
pytestmark = pytest.mark.skipif(fastloop is None, reason=protocol.FAST_LOOP_OFF_REASON)

MISBEHAVING = ("--adapter", "misbehaving:MisbehavingHandler")

# Frames over FAST_FRAME_MAX go the Python way even in a fast bridge.
BIG_TEXT = "z" * (protocol.FAST_FRAME_MAX + 10)


def _requests() -> list[Any]:
    """Decoded requests, each exercising one path of the loop."""
    nested = {
        "text": 'h\u00e9llo \U0001f600 \x00\x1f\x7f "quoted" back\\slash\n',
        "numbers": [0, -1, 2**53 + 1, 2**63 - 1, -(2**63), 1.5, -0.0, 1e300, 5e-324],
        "flags": [True, False, None],
        "deep": {"a": {"b": {"c": [[], {}, [1, [2, [3]]]]}}},
    }
    return [
        {"id": 1, "command": "ping", "args": {}},
        {"id": "two", "command": "ping"},  # args may be absent
        {"id": 3, "command": "ping", "args": {"worker_id": "w-7"}},
        {"id": 4, "command": "echo", "args": nested},
        {"id": 5, "command": "echo", "args": {"big": BIG_TEXT}},  # Python loop
        {"id": 6, "command": "compute", "args": {"operation": "add", "a": 2, "b": 3.5}},
        {"id": 7, "command": "compute", "args": {"operation": "divide", "a": 1, "b": 0}},
        {"id": 8, "command": "compute", "args": {"operation": "multiply", "a": 1e308, "b": 10}},
        {"id": 9, "command": "compute", "args": {"operation": "modulo", "a": 1, "b": 2}},
        {"id": 10, "command": "no_such_command", "args": {}},
        {"id": 11, "command": "info", "args": {}},
        {"id": 12, "command": "return_set"},
        {"id": 13, "command": "return_object"},
        {"id": 14, "command": "return_bytes"},
        {"id": 15, "command": "return_nan"},
        {"id": 16, "command": "return_inf"},
        {"id": 17, "command": "return_bigint"},
        {"id": 18, "command": "raise", "args": {"why": "differential test"}},
        {"id": 19, "command": "raise_empty"},
        {"id": 20, "command": "raise_bad_request"},
        {"id": 21, "command": "raise_not_found"},
        {"id": True, "command": "ping"},  # a boolean is not an id
        {"id": 2.5, "command": "ping"},
        {"command": "ping"},
        {"id": 22},
        {"id": 23, "command": 7},
        {"id": 24, "command": "ping", "args": None},
        {"id": 25, "command": "ping", "args": [1]},
        [1, 2, 3],
        "just a string",
        {"id": 26, "command": "ping", "args": {}},  # still serving after all that
    ]


def _raw_payloads(codec_name: str) -> list[bytes]:
    """Payloads no codec encoder would produce."""
    if codec_name == "json":
        return [
            b"",
            b"{not json",
            b'  \n{"id": 30, "command": "ping"}\t ',  # whitespace around a value is fine
            b'{"id": 31, "command": "ping"} trailing',
            b'{"id": 32, "command": "ping", "args": {"x": NaN}}',
            b'{"id": 33, "command": "ping"}{"id": 34}',
            b"\xff\xfe",
            b'{"id": 35, "command": "echo", "args": {"k": "\\ud800"}}',  # a lone surrogate
        ]
    return [b"", b"\xc1", b"\x82\xa2id", b"\x81\x01\x02", b"\x83\xa2id\x24\xa7command\xa4ping"]


def _payloads(codec_name: str) -> list[bytes]:
    codec = get_codec(codec_name)
    return [codec.encode(value) for value in _requests()] + _raw_payloads(codec_name)


def _normalise(response: Any) -> Any:
    """A response with what legitimately differs between two runs taken out."""
    if not isinstance(response, dict):
        return response
    response = dict(response)
    response.pop("timestamp", None)
    result = response.get("result")
    if isinstance(result, dict):
        result = dict(result)
        result.pop("uptime", None)
        result.pop("system_info", None)
        response["result"] = result
    if "traceback" in response:
        # The frames above process_command differ (the C loop has none);
        # the adapter's frame and the exception line must not.
        lines = response.pop("traceback").strip().splitlines()
        response["traceback_end"] = lines[-1]
        response["traceback_mentions_adapter"] = any("misbehaving.py" in x for x in lines)
    return response


def _answers(
    argv: tuple[str, ...], codec_name: str, negotiated: bool, pure: bool, split: bool
) -> tuple[list[Any], bytes]:
    env = adapter_env({protocol.PURE_PYTHON_ENV: "1"} if pure else {})
    if not pure:
        env.pop(protocol.PURE_PYTHON_ENV, None)
    payloads = _payloads(codec_name)
    codec = get_codec(codec_name)
    with StdioBridge(argv, env=env) as bridge:
        if negotiated:
            assert negotiate(bridge, ["json", "msgpack"], codec_name) == codec_name
        frames = b"".join(encode_frame(p) for p in payloads)
        if split:  # every header and payload torn across writes
            for offset in range(0, len(frames), 7):
                bridge.send_bytes(frames[offset : offset + 7], TIMEOUT)
        else:
            bridge.send_bytes(frames, TIMEOUT)
        answers = [_normalise(codec.decode(bridge.read_frame(TIMEOUT))) for _ in payloads]
        bridge.close_stdin()
        ended = bridge.wait_exit(TIMEOUT)
        assert ended is not None and ended.returncode == 0, bridge.stderr_tail()
        return answers, bridge.stderr_tail()


SETUPS = {
    "v2-json": ((*V2, "--protocol", "json"), "json", False),
    "v2-msgpack": ((*V2, "--protocol", "msgpack"), "msgpack", False),
    "v2-negotiated-msgpack": (V2, "msgpack", True),
    "v1-json": (V1, "json", False),
    "misbehaving-json": ((*V2, "--protocol", "json", *MISBEHAVING), "json", False),
    "misbehaving-msgpack": ((*V2, "--protocol", "msgpack", *MISBEHAVING), "msgpack", False),
}


@pytest.mark.parametrize("split", [False, True], ids=["pipelined", "torn"])
@pytest.mark.parametrize("setup", list(SETUPS))
def test_fast_and_python_loops_answer_every_frame_alike(setup: str, split: bool) -> None:
    argv, codec_name, negotiated = SETUPS[setup]
    fast, fast_log = _answers(argv, codec_name, negotiated, pure=False, split=split)
    pure, pure_log = _answers(argv, codec_name, negotiated, pure=True, split=split)
    assert b"C fast loop" in fast_log, fast_log  # the comparison is not Python vs Python
    assert b"Python loop only" in pure_log, pure_log
    assert len(fast) == len(pure)
    for index, (mine, reference) in enumerate(zip(fast, pure, strict=True)):
        # repr: NaN (MessagePack carries it) is not equal to itself
        assert repr(mine) == repr(reference), (
            f"frame {index}: fast {mine!r} != Python {reference!r}"
        )
    # The corpus reaches the outcomes it is meant to (else the test proves little).
    kinds = {a.get("error_type") if isinstance(a, dict) else None for a in fast}
    assert {None, "bad_request", "decode_error"} <= kinds, kinds
    if "misbehaving" in setup:
        assert {"handler_error", "serialization_error", "not_found"} <= kinds, kinds


# -- the JSON writer -------------------------------------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


def _stdlib(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("ascii")


@settings(max_examples=400, deadline=None)
@given(_json_values)
def test_json_writer_matches_the_stdlib_byte_for_byte(value: Any) -> None:
    written = fastloop.encode_json(value)
    assert written is not None, "plain JSON values are the writer's own"
    assert written == _stdlib(value)


class _Text(str):
    pass


def _nested(depth: int) -> list[Any]:
    value: list[Any] = [1]
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        {1: "int key"},
        {None: 1},
        {_Text("subclass key"): 1},
        [math.nan],
        {"x": math.inf},
        _Text("a str subclass"),
        {"set": {1}},
        b"bytes",
        _nested(70),  # deeper than the writer goes
    ],
    ids=repr,
)
def test_json_writer_leaves_the_unusual_to_the_stdlib(value: Any) -> None:
    assert fastloop.encode_json(value) is None


def test_json_writer_raises_what_the_stdlib_raises_for_huge_integers() -> None:
    with pytest.raises(ValueError, match="digits"):
        fastloop.encode_json({"n": 10**5000})
    with pytest.raises(ValueError, match="digits"):
        _stdlib({"n": 10**5000})


# -- the JSON reader -------------------------------------------------------------------


def _typed(value: Any) -> str:
    """repr with the types that == hides (1 == 1.0 == True) and NaN made comparable."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{_typed(k)}:{_typed(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(map(_typed, value)) + "]"
    return f"{type(value).__name__}:{value!r}"


def _stdlib_reads(text: bytes) -> list[Any] | None:
    # What the bridges' JSON codec accepts: strict, no NaN/Infinity.
    try:
        return [protocol._JsonWire().decode(memoryview(text))]
    except Exception:
        return None


@settings(max_examples=400, deadline=None)
@given(_json_values, st.booleans(), st.sampled_from(["", " ", "\n\t ", "\r"]))
def test_json_reader_reads_what_the_stdlib_reads(value: Any, ascii_only: bool, space: str) -> None:
    text = (
        space + json.dumps(value, ensure_ascii=ascii_only, separators=(", ", space + ":")) + space
    )
    read = fastloop.decode_json(text.encode("utf-8", "surrogatepass"))
    expected = _stdlib_reads(text.encode("utf-8", "surrogatepass"))
    assert read is not None and expected is not None
    assert _typed(read[0]) == _typed(expected[0])


# Bytes that are mostly JSON: the reader must either agree with the stdlib or step aside.
_json_ish = st.lists(
    st.sampled_from(
        [
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            '"',
            "\\",
            "u",
            "d8",
            "00",
            "dc",
            "0",
            "1",
            "-",
            ".",
            "e",
            "+",
            " ",
            "true",
            "false",
            "null",
            "NaN",
            '"k"',
            "\x01",
            "\u00e9",
            "9" * 30,
        ]
    ),
    max_size=25,
).map(lambda parts: "".join(parts).encode("utf-8"))


@settings(max_examples=1000, deadline=None)
@given(_json_ish)
def test_json_reader_never_accepts_what_the_stdlib_refuses(text: bytes) -> None:
    expected = _stdlib_reads(text)
    try:
        read = fastloop.decode_json(text)
    except ValueError:  # an integer too long to convert: the fast loop then defers too
        read = None
    if read is not None:
        assert expected is not None, f"the reader accepted {text!r}"
        assert _typed(read[0]) == _typed(expected[0])


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b'"\\ud83d\\ude00"', "\U0001f600"),  # a surrogate pair is one code point
        (b'"\\ud800"', "\ud800"),  # a lone surrogate stays
        (b'"\\ud800\\u0041"', "\ud800A"),
        (b"-0", 0),
        (b"1e400", math.inf),  # float() overflows to infinity; so does the stdlib
        (b'{"a": 1, "a": 2}', {"a": 2}),
    ],
)
def test_json_reader_edge_cases(text: bytes, value: Any) -> None:
    assert fastloop.decode_json(text) == [value]
    assert _stdlib_reads(text) == [value]


@pytest.mark.parametrize("text", [b"01", b"1.", b"1e", b"[1,]", b'{"a":1,}', b"NaN", b'"\x01"'])
def test_json_reader_steps_aside_for_invalid_text(text: bytes) -> None:
    assert fastloop.decode_json(text) is None


# -- the timestamp -------------------------------------------------------------------


def _both_timestamps() -> tuple[str, str, str]:
    return adapter.utc_timestamp(), fastloop.utc_timestamp(), adapter.utc_timestamp()


def test_timestamps_read_the_same_clock_the_same_way() -> None:
    pattern = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    deadline = time.monotonic() + 5
    while True:  # retry until the three readings fall within one millisecond
        before, fast, after = _both_timestamps()
        assert pattern.match(fast), fast
        assert before <= fast <= after
        if before == after:
            assert fast == before
            return
        assert time.monotonic() < deadline, "the clock never held still for a millisecond"


def test_a_subclass_that_changes_the_loop_gets_the_python_loop() -> None:
    from snakepit_bridge.generic import GenericCommandHandler

    class Logged(protocol.ProtocolHandler):
        def _answer(self, request: Any) -> bytes:
            return super()._answer(request)

    assert protocol.ProtocolHandler(GenericCommandHandler())._fast_loop is fastloop
    assert Logged(GenericCommandHandler())._fast_loop is None
