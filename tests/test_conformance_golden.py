"""Golden-frame files and the matcher: every file is well formed, its wire hex is exactly
the frame of its structured request, ids are unique, and the matcher means what FORMAT.md says."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from snakepit_harness.conformance import all_cases
from snakepit_harness.conformance.golden import (
    GOLDEN_DIR,
    GoldenError,
    golden_files,
    load_case,
    load_document,
    run_steps,
    wire_hex,
    wire_mismatches,
)
from snakepit_harness.conformance.matcher import MatcherError, decode_special, match
from snakepit_harness.conformance.model import CaseFailed, Grade, Level
from snakepit_harness.conformance.registry import _ID_PATTERN

FILES = list(golden_files(GOLDEN_DIR))
# Fuzz regressions (FORMAT.md) hold the exact bytes of a failure, cut as the
# fuzzer's writes were: raw steps only, and a step need not be one whole frame.
REGRESSIONS = [p for p in FILES if p.parent.name == "regressions"]
HANDWRITTEN = [p for p in FILES if p not in REGRESSIONS]


def test_golden_directory_holds_the_handwritten_cases() -> None:
    ids = {load_document(p)["id"] for p in FILES}
    # A few that the spec makes central; losing one would be a regression.
    for wanted in (
        "framing.zero-length",
        "messages.unknown-command",
        "messages.id-string",
        "messages.malformed.missing-command",
        "commands.compute.divide",
        "lifecycle.init-ping",
    ):
        assert wanted in ids
    assert len(FILES) >= 30


@pytest.mark.parametrize("path", HANDWRITTEN, ids=lambda p: p.stem)
def test_golden_file_wire_hex_matches_structured_request(path: Path) -> None:
    doc = load_document(path)
    assert wire_mismatches(doc) == []
    # Every `send` step carries reviewable hex for both codecs it can use.
    sends = [s for s in doc["steps"] if "send" in s]
    assert sends or any("send_raw" in s for s in doc["steps"]), "a golden case sends something"
    for step in sends:
        assert set(step["wire"]) >= {"json"}


def _after_whole_frames(stream: bytes) -> bytes:
    """What is left of ``stream`` after its complete frames."""
    while len(stream) >= 4 and len(stream) >= 4 + int.from_bytes(stream[:4], "big"):
        stream = stream[4 + int.from_bytes(stream[:4], "big") :]
    return stream


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_golden_file_is_a_valid_case(path: Path) -> None:
    doc = load_document(path)
    assert _ID_PATTERN.match(doc["id"])
    assert path.name == doc["id"] + ".json"
    assert doc["level"] in ("required", "recommended", "info")
    assert doc["requirement"].endswith(".")
    case = load_case(path)
    assert case.profiles <= {"v1", "v2", "enhanced", "grpc"}
    # Raw steps are valid hex, and taken together they are whole frames: each
    # header announces exactly the bytes that follow (the steps may cut the
    # stream anywhere, as framing.split-writes and the regressions do).
    streams: dict[str, bytes] = {}
    for step in doc["steps"]:
        for codec, hex_text in step.get("send_raw", {}).items():
            streams[codec] = streams.get(codec, b"") + bytes.fromhex(hex_text)
    closes_input = any("close_stdin" in step for step in doc["steps"])
    for stream in streams.values():
        assert closes_input or _after_whole_frames(stream) == b"", (
            "a case that keeps input open sends whole frames"
        )


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.stem)
def test_fuzz_regression_is_raw_bytes_on_a_fresh_bridge_with_its_explanation(path: Path) -> None:
    doc = load_document(path)
    assert re.fullmatch(r"fuzz\.[0-9a-f]{8}", doc["id"])
    assert doc["bridge"] == "fresh"
    assert all("send" not in step for step in doc["steps"])
    assert any("expect" in step for step in doc["steps"])
    assert path.with_suffix(".md").is_file(), "the .md beside it says what broke and how to replay"


def test_wire_mismatch_is_detected(tmp_path: Path) -> None:
    doc = load_document(FILES[0])
    step = next(s for s in doc["steps"] if "send" in s)
    step["wire"]["json"] = step["wire"]["json"][:-2] + "00"
    assert wire_mismatches(doc)


def test_case_ids_are_unique_across_python_and_golden() -> None:
    cases = all_cases()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids))


def test_bad_golden_file_gets_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"format": "snakepit-golden/1", "id": "a.b"}))
    with pytest.raises(GoldenError, match="missing required key"):
        load_document(bad)
    bad.write_text("{not json")
    with pytest.raises(GoldenError, match="cannot read"):
        load_document(bad)


def test_wire_hex_is_a_frame() -> None:
    hex_text = wire_hex({"id": 1, "command": "ping"}, "json")
    raw = bytes.fromhex(hex_text)
    assert raw[4:] == b'{"id":1,"command":"ping"}'
    assert int.from_bytes(raw[:4], "big") == len(raw) - 4


MATCHER_TABLE = [
    # (value, matcher, matches?)
    ({"a": 1, "b": 2}, {"a": 1}, True),  # objects are open
    ({"a": 1}, {"a": 1, "b": 2}, False),
    ({"a": 1, "b": 2}, {"$eq": {"a": 1}}, False),  # $eq is exact
    ({"a": [1, {"b": None}]}, {"$eq": {"a": [1, {"b": None}]}}, True),
    (True, 1, False),  # booleans are not numbers
    (1, 1.0, True),
    (-0.0, {"$eq": -0.0}, True),
    (0.0, {"$eq": -0.0}, False),  # echo keeps the sign of zero
    (0, 0.0, True),
    ("1", 1, False),
    (b"ab", {"$bytes": "6162"}, True),
    ("ab", {"$bytes": "6162"}, False),  # text is not bytes
    (2**64 + 1, {"$int": str(2**64 + 1)}, True),
    (math.inf, {"$float": "inf"}, True),
    ("2026-01-01T00:00:00.123Z", {"$format": "iso8601"}, True),
    ("2026-01-01T00:00:00+02:00", {"$format": "iso8601"}, True),
    ("2026-01-01 00:00:00", {"$format": "iso8601"}, False),  # no zone
    ("2026-01-01t00:00:00,5z", {"$format": "iso8601"}, True),  # RFC 3339 allows lower case
    ("1764316800", {"$format": "iso8601"}, False),  # epoch seconds
    (3.5, {"$type": "number", "$ge": 0}, True),
    (-1, {"$type": "number", "$ge": 0}, False),
    (5, {"$type": "integer"}, True),
    (5.0, {"$type": "integer"}, False),
    ({"x": 1}, {"y": {"$absent": True}}, True),
    ({"y": 1}, {"y": {"$absent": True}}, False),
    ("bad_request", {"$oneOf": ["decode_error", "bad_request"]}, True),
    ("other", {"$oneOf": ["decode_error", "bad_request"]}, False),
    ("unknown command foo", {"$contains": "foo"}, True),
    (["ping", "echo", "info"], {"$contains": ["ping", "info"]}, True),
    (["ping"], {"$contains": ["ping", "info"]}, False),
    ("", {"$nonEmpty": True}, False),
    ({"a": 1}, {"$keys": ["a"]}, True),
    ({"a": 1, "b": 2}, {"$keys": ["a"]}, False),
    ("abc", {"$regex": "^a.c$"}, True),
    (7, {"$not": {"$type": "string"}}, True),
    ([1, 2], [1, 2], True),
    ([1, 2], [1], False),
]


@pytest.mark.parametrize(("value", "matcher", "matches"), MATCHER_TABLE)
def test_matcher_table(value: object, matcher: object, matches: bool) -> None:
    problems = match(value, matcher)
    assert (problems == []) is matches, problems


def test_matcher_problems_name_the_path() -> None:
    problems = match({"result": {"status": "error"}}, {"result": {"status": "ok"}})
    assert problems == ["$.result.status: expected 'ok', got 'error'"]


def test_unknown_operator_is_an_error() -> None:
    with pytest.raises(MatcherError):
        match(1, {"$bogus": 1})


def test_decode_special_round_trip() -> None:
    value = decode_special(
        {"b": {"$bytes": "00ff"}, "i": {"$int": "-9"}, "l": [{"$float": "-inf"}]}
    )
    assert value == {"b": b"\x00\xff", "i": -9, "l": [-math.inf]}


class ScriptedBridge:
    """A StepContext whose bridge answers from a script: the golden interpreter
    is sans-IO, so its reading of optional steps is tested without a process."""

    codec_name = "json"

    def __init__(self, answers: list[object]) -> None:
        self.answers = list(answers)
        self.findings: list[tuple[Grade, str]] = []

    def send_value(self, value: object, wire: bytes | None = None) -> None:
        pass

    def send_raw(self, data: bytes) -> None:
        pass

    def wait_sent_read(self, timeout: float) -> None:
        pass

    def read_value(self) -> object:
        return self.answers.pop(0)

    def close_stdin(self) -> None:
        pass

    def expect_exit(self, within: float) -> int | None:
        return 0

    def add_finding(self, grade: Grade, message: str) -> None:
        self.findings.append((grade, message))


def _optional_error() -> dict[str, Any]:
    return {
        "expect": {"match": {"id": None, "success": False}},
        "optional": {"grade": "pass", "why": "answering a malformed frame is a SHOULD"},
    }


def test_several_unanswered_optional_steps_let_the_frame_answer_the_next_required_one() -> None:
    steps: list[dict[str, Any]] = [
        {"send_raw": {"json": "0000000100"}},
        {"send_raw": {"json": "0000000100"}},
        {"send": {"id": 7, "command": "ping", "args": {}}},
        _optional_error(),
        _optional_error(),
        {"expect": {"match": {"id": 7, "success": True}}},
    ]
    silent = ScriptedBridge([{"id": 7, "success": True, "result": {"status": "ok"}}])
    run_steps(silent, steps, Level.REQUIRED, "test")
    assert [grade for grade, _ in silent.findings] == [Grade.PASS, Grade.PASS]
    answering = ScriptedBridge(
        [{"id": None, "success": False}, {"id": None, "success": False}, {"id": 7, "success": True}]
    )
    run_steps(answering, steps, Level.REQUIRED, "test")
    assert answering.findings == [] and answering.answers == []
    wrong = ScriptedBridge([{"id": 8, "success": True}])
    with pytest.raises(CaseFailed, match="unexpected response"):
        run_steps(wrong, steps, Level.REQUIRED, "test")
