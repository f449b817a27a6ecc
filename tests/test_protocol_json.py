"""StrictJson, the one strict-JSON encoder/decoder of the tree, writes what json.dumps writes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakepit_harness.protocol import StrictJson, codec_of_object, get_codec

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@pytest.mark.parametrize("ascii_only", [True, False])
@pytest.mark.parametrize("compact", [True, False])
@given(value=_VALUES)
def test_the_same_text_as_the_stdlib(ascii_only: bool, compact: bool, value: Any) -> None:
    separators = (",", ":") if compact else (", ", ": ")
    expected = json.dumps(value, allow_nan=False, ensure_ascii=ascii_only, separators=separators)
    encoder = StrictJson(ascii=ascii_only, compact=compact)
    assert encoder.dumps(value) == expected
    assert encoder.loads(expected) == json.loads(expected)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "[1, NaN]"])
def test_non_standard_tokens_are_refused_both_ways(token: str) -> None:
    strict = StrictJson()
    with pytest.raises(ValueError):
        strict.loads(token)
    with pytest.raises(ValueError):
        strict.dumps([float(token.strip("[1, ]"))])


def test_codec_of_object_names_the_codec_an_object_is_in() -> None:
    value = {"id": 1, "success": True}
    assert codec_of_object(get_codec("json").encode(value)) == "json"
    assert codec_of_object(get_codec("msgpack").encode(value)) == "msgpack"
    assert codec_of_object(b"\x00\x01garbage") is None
    assert codec_of_object(get_codec("msgpack").encode([1, 2])) is None  # not an object
