"""The reference stdio bridges (v1, v2) against PROTOCOL §2-§4 and §6, as a host meets them.

Each table row is one request a host (or a broken host) might send; every
row runs against every way of running the bridges (``SETUPS``: v1 and v2,
JSON and MessagePack, with and without negotiation), on one long-lived bridge
per setup, and checks the answer and that the bridge keeps serving.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from snakepit_harness import get_codec
from snakepit_harness.protocol import SPEC_MIN_FRAME_SIZE, encode_frame

from .adapters.support import SETUP_IDS, SETUPS, Session, Setup, session

# Every test here runs against bridges with and without the C fast loop.
pytestmark = pytest.mark.usefixtures("both_loops")


class _BridgePool:
    """One long-lived bridge per setup, started on first use (and again if it died)."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._sessions: dict[str, Session] = {}

    def get(self, setup: Setup) -> Session:
        current = self._sessions.get(setup.name)
        if current is None or current.bridge.poll() is not None:
            current = self._stack.enter_context(session(setup))
            self._sessions[setup.name] = current
        return current


@pytest.fixture(scope="module")
def pool() -> Iterator[_BridgePool]:
    with ExitStack() as stack:
        yield _BridgePool(stack)


@pytest.fixture(params=SETUPS, ids=SETUP_IDS)
def bridge(request: pytest.FixtureRequest, pool: _BridgePool) -> Session:
    setup: Setup = request.param
    return pool.get(setup)


def _encode(codec: str, value: Any) -> bytes:
    return get_codec(codec).encode(value)


def _json_only(raw: bytes) -> Callable[[str], bytes | None]:
    return lambda codec: raw if codec == "json" else None


def _msgpack_only(raw: bytes) -> Callable[[str], bytes | None]:
    return lambda codec: raw if codec == "msgpack" else None


def _value(value: Any) -> Callable[[str], bytes | None]:
    return lambda codec: _encode(codec, value)


@dataclass(frozen=True)
class BadInput:
    name: str
    payload: Callable[[str], bytes | None]  # None: the case does not apply to that codec
    error_type: str | tuple[str, ...]
    rid: int | str | None  # the id the answer must carry


BAD_INPUTS = [
    # §2.4 / §3.3: payloads that do not decode.
    BadInput("zero-length payload", lambda codec: b"", ("decode_error", "bad_request"), None),
    BadInput("undecodable json", _json_only(b'{"id": 1, "command": '), "decode_error", None),
    BadInput(
        "json trailing bytes", _json_only(b'{"id":1,"command":"ping"} {}'), "decode_error", None
    ),
    BadInput(
        "json NaN token",
        _json_only(b'{"id":1,"command":"echo","args":{"x":NaN}}'),
        "decode_error",
        None,
    ),
    BadInput(
        "json invalid utf-8", _json_only(b'{"id":1,"command":"\xff\xfe"}'), "decode_error", None
    ),
    BadInput("msgpack reserved byte", _msgpack_only(b"\xc1"), "decode_error", None),
    BadInput("msgpack truncated map", _msgpack_only(b"\x84\xa2id\x01"), "decode_error", None),
    BadInput(
        "msgpack trailing bytes",
        lambda c: _encode(c, {"id": 1, "command": "ping"}) + b"\x00" if c == "msgpack" else None,
        "decode_error",
        None,
    ),
    BadInput("msgpack integer map key", _msgpack_only(b"\x81\x01\x02"), "decode_error", None),
    # §4.3: decodes, but is not a request.
    BadInput("array payload", _value([1, 2, 3]), "bad_request", None),
    BadInput("string payload", _value("ping"), "bad_request", None),
    BadInput("number payload", _value(42), "bad_request", None),
    BadInput("null payload", _value(None), "bad_request", None),
    BadInput("missing command", _value({"id": 11}), "bad_request", 11),
    BadInput("integer command", _value({"id": 12, "command": 7}), "bad_request", 12),
    BadInput("null command", _value({"id": "c", "command": None}), "bad_request", "c"),
    BadInput("array args", _value({"id": 13, "command": "echo", "args": [1]}), "bad_request", 13),
    BadInput("string args", _value({"id": 14, "command": "echo", "args": "x"}), "bad_request", 14),
    BadInput("null args", _value({"id": 15, "command": "echo", "args": None}), "bad_request", 15),
    BadInput("missing id", _value({"command": "ping"}), "bad_request", None),
    BadInput("null id", _value({"id": None, "command": "ping"}), "bad_request", None),
    BadInput("float id", _value({"id": 1.5, "command": "ping"}), "bad_request", None),
    BadInput("boolean id", _value({"id": True, "command": "ping"}), "bad_request", None),
    BadInput("array id", _value({"id": [1], "command": "ping"}), "bad_request", None),
    BadInput("object id", _value({"id": {"n": 1}, "command": "ping"}), "bad_request", None),
    # §4.4: unknown command.
    BadInput(
        "unknown command", _value({"id": 21, "command": "no_such_cmd"}), "unknown_command", 21
    ),
    BadInput("empty command", _value({"id": 22, "command": ""}), "unknown_command", 22),
    # §6.3: compute failures (documented as bad_request).
    BadInput(
        "divide by zero",
        _value({"id": 31, "command": "compute", "args": {"operation": "divide", "a": 1, "b": 0}}),
        "bad_request",
        31,
    ),
    BadInput(
        "unknown operation",
        _value({"id": 32, "command": "compute", "args": {"operation": "pow", "a": 2, "b": 3}}),
        "bad_request",
        32,
    ),
    BadInput(
        "string operand",
        _value({"id": 33, "command": "compute", "args": {"operation": "add", "a": "1", "b": 2}}),
        "bad_request",
        33,
    ),
    BadInput(
        "boolean operand",
        _value({"id": 34, "command": "compute", "args": {"operation": "add", "a": True, "b": 2}}),
        "bad_request",
        34,
    ),
    BadInput(
        "missing operand",
        _value({"id": 35, "command": "compute", "args": {"operation": "add", "a": 1}}),
        "bad_request",
        35,
    ),
]


def _setups_where(codec: str | None) -> list[Any]:
    """The setups speaking ``codec`` (all when None), for indirect parametrization."""
    return [pytest.param(s, id=s.name) for s in SETUPS if codec in (None, s.codec)]


# Each bad input on every setup whose codec it applies to (no skips for the rest).
BAD_INPUT_RUNS = [
    pytest.param(setup, case, id=f"{setup.name}-{case.name}")
    for case in BAD_INPUTS
    for setup in SETUPS
    if case.payload(setup.codec) is not None
]


@pytest.mark.parametrize(("bridge", "case"), BAD_INPUT_RUNS, indirect=["bridge"])
def test_bad_input_is_answered_and_the_bridge_keeps_serving(
    bridge: Session, case: BadInput
) -> None:
    payload = case.payload(bridge.codec.name)
    assert payload is not None
    response = bridge.raw(payload)
    assert response["success"] is False, response
    expected = case.error_type if isinstance(case.error_type, tuple) else (case.error_type,)
    assert response["error_type"] in expected, response
    assert response["id"] == case.rid and type(response["id"]) is type(case.rid), response
    if case.error_type == "unknown_command":
        assert repr(bridge.codec.decode(payload)["command"]) in response["error"]
    bridge.assert_serving()


IDS: list[int | str] = [1, 0, -7, 2**62, "abc", "", "ünïcødé-id", "42"]


@pytest.mark.parametrize("rid", IDS, ids=[repr(i) for i in IDS])
def test_ids_come_back_with_their_type(bridge: Session, rid: int | str) -> None:
    bridge.call(rid, "ping")


def test_ping_reports_counters_and_echoes_worker_id(bridge: Session) -> None:
    first = bridge.ok(1, "ping", worker_id="worker-7", initialization=True)
    second = bridge.ok(2, "ping", health_check=True)
    assert first["status"] == "ok" and second["status"] == "ok"
    assert first["worker_id"] == "worker-7"
    assert isinstance(first["bridge_type"], str) and first["bridge_type"]
    assert second["uptime"] >= first["uptime"] >= 0
    assert second["requests_handled"] >= first["requests_handled"] >= 1


ECHO_VALUES: list[Any] = [
    {},
    {"nested": {"list": [1, 2.5, None, True, False, "x"], "empty": [], "obj": {}}},
    {"unicode": "snake \U0001f40d, ünïcødé, \u2028, \x00 nul"},
    {"big": 2**53 - 1, "bigger": 2**63 - 1, "negative": -(2**63), "float": 1e-300},
    {"deep": [[[[[[[[[[["bottom"]]]]]]]]]]]},
]


@pytest.mark.parametrize("args", ECHO_VALUES, ids=[f"echo{i}" for i in range(len(ECHO_VALUES))])
def test_echo_returns_args_deep_equal(bridge: Session, args: dict[str, Any]) -> None:
    result = bridge.ok(5, "echo", **args)
    assert result == {"status": "ok", "echoed": args}


@pytest.mark.parametrize("bridge", _setups_where("json"), indirect=True)
def test_json_carries_integers_beyond_2_53_exactly(bridge: Session) -> None:
    # (MessagePack integers stop at 64 bits, so this is for JSON only.)
    assert bridge.ok(6, "echo", n=2**70 + 1)["echoed"]["n"] == 2**70 + 1


@pytest.mark.parametrize("bridge", _setups_where("msgpack"), indirect=True)
def test_msgpack_bytes_stay_bytes(bridge: Session) -> None:
    blob = bytes(range(256))
    echoed = bridge.ok(7, "echo", blob=blob, text="text")["echoed"]
    assert echoed["blob"] == blob and isinstance(echoed["blob"], bytes)
    assert isinstance(echoed["text"], str)


COMPUTE = [
    ("add", 2, 3, 5),
    ("subtract", 2, 3, -1),
    ("multiply", 4, 2.5, 10.0),
    ("divide", 7, 2, 3.5),
    ("divide", -9, 3, -3.0),
    ("add", 2**62, 2**62 - 1, 2**63 - 1),
]


@pytest.mark.parametrize(("operation", "a", "b", "expected"), COMPUTE)
def test_compute(bridge: Session, operation: str, a: float, b: float, expected: float) -> None:
    result = bridge.ok(8, "compute", operation=operation, a=a, b=b)
    assert result["status"] == "ok"
    assert result["operation"] == operation
    assert result["inputs"] == {"a": a, "b": b}
    assert result["result"] == expected and not math.isnan(result["result"])


def test_info_lists_every_command(bridge: Session) -> None:
    result = bridge.ok(9, "info")
    assert result["status"] == "ok"
    info = result["bridge_info"]
    assert isinstance(info["name"], str) and isinstance(info["version"], str)
    assert set(info["supported_commands"]) >= {"ping", "echo", "compute", "info"}
    assert isinstance(result["system_info"], dict)
    for command in info["supported_commands"]:
        # Every listed command is answered (not unknown_command).
        response = bridge.call(10, command)
        assert response.get("error_type") != "unknown_command", response


def test_pipelined_frames_are_answered_in_order(bridge: Session) -> None:
    codec = bridge.codec
    requests: list[bytes] = []
    expected: list[tuple[Any, bool]] = []
    for i in range(60):
        kind = i % 4
        if kind == 0:
            requests.append(codec.encode({"id": i, "command": "ping"}))
            expected.append((i, True))
        elif kind == 1:
            requests.append(codec.encode({"id": f"s{i}", "command": "echo", "args": {"i": i}}))
            expected.append((f"s{i}", True))
        elif kind == 2:
            requests.append(codec.encode({"id": i, "command": "nope"}))
            expected.append((i, False))
        else:
            requests.append(b"")  # malformed: answered with id null
            expected.append((None, False))
    bridge.bridge.send_bytes(b"".join(encode_frame(p) for p in requests), timeout=20)
    got = [bridge.read() for _ in requests]
    assert [(r["id"], r["success"]) for r in got] == expected
    assert bridge.bridge.unread_stdout == 0  # nothing extra on stdout
    bridge.assert_serving()


def test_16_mib_frames_both_ways(bridge: Session) -> None:
    # §2.2: a request payload of exactly 16 MiB is accepted, and the (larger)
    # response comes back whole.
    codec = bridge.codec
    envelope = {"id": 99, "command": "echo", "args": {"data": ""}}
    overhead = len(codec.encode(envelope))
    if codec.name == "msgpack":
        # bin 32 header (5 bytes) replaces the empty str's one byte.
        data: str | bytes = os.urandom(SPEC_MIN_FRAME_SIZE - overhead - 4)
    else:
        data = "x" * (SPEC_MIN_FRAME_SIZE - overhead)
    envelope["args"]["data"] = data  # type: ignore[index]
    payload = codec.encode(envelope)
    assert len(payload) == SPEC_MIN_FRAME_SIZE
    response = bridge.raw(payload)
    assert response["success"] is True, {k: v for k, v in response.items() if k != "result"}
    assert response["result"]["echoed"]["data"] == data
    bridge.assert_serving()
