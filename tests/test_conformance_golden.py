"""Golden-frame files and the matcher: every file is well formed, its wire hex is exactly
the frame of its structured request, ids are unique, and the matcher means what FORMAT.md says."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from snakepit_harness.conformance import all_cases
from snakepit_harness.conformance.golden import (
    GOLDEN_DIR,
    GoldenError,
    golden_files,
    load_case,
    load_document,
    wire_hex,
    wire_mismatches,
)
from snakepit_harness.conformance.matcher import MatcherError, decode_special, match
from snakepit_harness.conformance.registry import _ID_PATTERN

FILES = list(golden_files(GOLDEN_DIR))


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


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_golden_file_wire_hex_matches_structured_request(path: Path) -> None:
    doc = load_document(path)
    assert wire_mismatches(doc) == []
    # Every `send` step carries reviewable hex for both codecs it can use.
    sends = [s for s in doc["steps"] if "send" in s]
    assert sends, "a golden case sends something"
    for step in sends:
        assert set(step["wire"]) >= {"json"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_golden_file_is_a_valid_case(path: Path) -> None:
    doc = load_document(path)
    assert _ID_PATTERN.match(doc["id"])
    assert path.name == doc["id"] + ".json"
    assert doc["level"] in ("required", "recommended", "info")
    assert doc["requirement"].endswith(".")
    case = load_case(path)
    assert case.profiles <= {"v1", "v2", "enhanced", "grpc"}
    # Raw steps are valid hex, and frames announce exactly the bytes that follow.
    for step in doc["steps"]:
        for hex_text in step.get("send_raw", {}).values():
            raw = bytes.fromhex(hex_text)
            assert int.from_bytes(raw[:4], "big") == len(raw) - 4


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
