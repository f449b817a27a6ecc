"""The bridge-service facts of the protocol core (§9), checked against hand-written data.

``fixtures/bridge_service/golden/bridge_service.json`` is written from the
spec, not from the code: the bytes a parameter travels as, the kinds a
result's type URL may name, how the host reads a ready file, what counts as
the error JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from snakepit_harness.protocol import UnencodableValue
from snakepit_harness.protocol.bridge_service import (
    NO_EXAMPLE,
    PARAMETER_TYPE_URL,
    AnyJsonError,
    HeartbeatConfig,
    ParamInfo,
    ToolCallsError,
    ToolInfo,
    decode_any_json,
    encode_parameter,
    encode_tool_result,
    example_arguments,
    launch_argv,
    parse_ready_file,
    parse_tool_calls,
    result_type_problem,
    tool_calls_for,
    tool_error_json,
    tool_error_problems,
)

DATA = json.loads(
    (
        Path(__file__).resolve().parent.parent
        / "fixtures"
        / "bridge_service"
        / "golden"
        / "bridge_service.json"
    ).read_text(encoding="utf-8")
)


@pytest.mark.parametrize("entry", DATA["parameters"], ids=lambda e: repr(e["value"])[:30])
def test_parameters_travel_as_their_json_text(entry: dict[str, Any]) -> None:
    type_url, value = encode_parameter(entry["value"])
    assert type_url == PARAMETER_TYPE_URL == DATA["parameter_type_url"]
    assert value == entry["json_text"].encode("utf-8")
    assert decode_any_json(value) == entry["value"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1, 2}, b"raw"])
def test_values_json_cannot_carry_are_refused(value: Any) -> None:
    with pytest.raises(UnencodableValue):
        encode_parameter(value)


@pytest.mark.parametrize("raw", [b"NaN", b"'single'", b"\xff\xfe", b"", b"[1,", b"Infinity"])
def test_non_json_values_do_not_decode(raw: bytes) -> None:
    with pytest.raises(AnyJsonError):
        decode_any_json(raw)


def test_large_integers_survive_both_ways() -> None:
    for number in DATA["large_integers"]:
        assert decode_any_json(encode_parameter(number)[1]) == number
        assert decode_any_json(encode_tool_result(number)[1]) == number


@pytest.mark.parametrize("entry", DATA["result_type_urls"], ids=lambda e: repr(e["value"]))
def test_result_type_urls(entry: dict[str, Any]) -> None:
    type_url, value = encode_tool_result(entry["value"])
    assert decode_any_json(value) == entry["value"]
    assert type_url.rsplit(".", 1)[-1] in entry["kinds"]
    for kind in entry["kinds"]:
        assert result_type_problem(f"type.googleapis.com/snakepit.{kind}", entry["value"]) is None
    wrong = "list" if "list" not in entry["kinds"] else "map"
    assert result_type_problem(f"type.googleapis.com/snakepit.{wrong}", entry["value"])
    assert result_type_problem("type.googleapis.com/google.protobuf.Struct", entry["value"])


@pytest.mark.parametrize("entry", DATA["ready_files"], ids=lambda e: repr(e["text"]))
def test_ready_files_read_as_snakepit_reads_them(entry: dict[str, Any]) -> None:
    assert parse_ready_file(entry["text"]) == entry["port"]


@pytest.mark.parametrize("entry", DATA["tool_errors"], ids=lambda e: e["error_message"][:30])
def test_tool_error_shape(entry: dict[str, Any]) -> None:
    assert (not tool_error_problems(entry["error_message"])) is entry["valid"]


def test_tool_error_json_is_the_shape_it_checks() -> None:
    text = tool_error_json(
        "ValueError", "bad input", stacktrace=["a\n", "b\n"], context={"tool_name": "t"}
    )
    assert tool_error_problems(text) == []
    payload = json.loads(text)
    assert payload == {
        "type": "ValueError",
        "message": "bad input",
        "stacktrace": ["a\n", "b\n"],
        "traceback": "a\nb\n",
        "context": {"tool_name": "t"},
    }
    # A context JSON cannot carry still gives an error JSON (its values as repr).
    odd = json.loads(tool_error_json("E", "m", context={"x": {1, 2}}))
    assert odd["context"] == {"x": "{1, 2}"}


def test_launch_appends_what_snakepit_appends() -> None:
    argv = launch_argv(["python", "grpc_server.py"], host_address="127.0.0.1:9", run_id="r1")
    assert argv == [
        "python",
        "grpc_server.py",
        "--port",
        "0",
        "--elixir-address",
        "127.0.0.1:9",
        "--snakepit-run-id",
        "r1",
    ]
    # As Snakepit does: a flag the command already mentions is not added again.
    named = launch_argv(["w", "--port=5000"], host_address="h:1", run_id="r")
    assert named == ["w", "--port=5000", "--elixir-address", "h:1", "--snakepit-run-id", "r"]
    assert all(type(arg) is str for arg in argv)


def test_heartbeat_config_reads_snakepit_and_upstream_spellings() -> None:
    assert HeartbeatConfig() == HeartbeatConfig(True, 2000, 10000, 3, 0, True)
    config = HeartbeatConfig.from_mapping(
        {"ping_interval_ms": 500, "maxMissedHeartbeats": "4", "dependent": "false", "x": 1}
    )
    assert (config.interval_ms, config.max_missed_heartbeats, config.dependent) == (500, 4, False)
    assert HeartbeatConfig.from_mapping({"timeout_ms": "soon", "interval_ms": -1}) == (
        HeartbeatConfig()
    )
    assert HeartbeatConfig.from_json(HeartbeatConfig(interval_ms=7).to_json()) == (
        HeartbeatConfig(interval_ms=7)
    )
    assert HeartbeatConfig.from_json("[1]") is None
    assert HeartbeatConfig.from_json("not json") is None
    assert HeartbeatConfig.from_json(None) is None
    limit = HeartbeatConfig(interval_ms=300, timeout_ms=500, max_missed_heartbeats=3)
    assert limit.host_loss_limit() == pytest.approx(3 * 0.8 + 6.0)


def test_examples_follow_upstream_and_schema_type_names() -> None:
    tool = ToolInfo(
        "t",
        (
            ParamInfo("a", "str", True),
            ParamInfo("b", "int", True),
            ParamInfo("c", "optional[float]", True),
            ParamInfo("d", "dict[str, any]", True),
            ParamInfo("e", "typing.List[int]", True),
            ParamInfo("f", "boolean", True),
            ParamInfo("g", "bytes", True),
            ParamInfo("h", "int | None", True),
            ParamInfo("skipped", "dataframe", False),
        ),
    )
    assert example_arguments(tool) == {
        "a": "snakepit",
        "b": 2,
        "c": 1.5,
        "d": {},
        "e": [1, 2, 3],
        "f": True,
        "g": b"snakepit",
        "h": 2,
    }
    unknown = ToolInfo("u", (ParamInfo("frame", "dataframe", True),))
    assert example_arguments(unknown) is None
    assert tool_calls_for(unknown) == []
    assert tool_calls_for(unknown, {"u": [{"frame": {"rows": []}}]}) == [{"frame": {"rows": []}}]
    assert NO_EXAMPLE is not None


def test_tool_calls_file() -> None:
    calls = parse_tool_calls(
        json.dumps({"a": [{"x": 1}, {"x": 2}], "b": {"blob": {"$base64": "AAEC"}}})
    )
    assert calls == {"a": [{"x": 1}, {"x": 2}], "b": [{"blob": b"\x00\x01\x02"}]}
    for bad in ("[]", "{", json.dumps({"a": [1]}), json.dumps({"a": {"v": {"$base64": "!"}}})):
        with pytest.raises(ToolCallsError):
            parse_tool_calls(bad)
