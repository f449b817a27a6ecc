"""Hypothesis strategies for the values each codec can carry (PROTOCOL.md §3), and their encodings.

Pure (no I/O): deep nesting, unicode edge cases (lone surrogates exist only
under JSON's ``\\uXXXX`` escapes; MessagePack strings are UTF-8 and cannot hold
them), integers past 2^53 and at the 64-bit limits, floats including ``-0.0``
(never NaN/infinity under JSON), bytes under MessagePack only, the size edge
classes (:func:`large_values`), and the payload encodings a real host may send
(compact or spaced JSON, ``\\u`` escapes or raw UTF-8), so a bridge meets the
same value in several byte forms.  :mod:`.strategies` builds requests and
broken frames from these.

Builders are cached per argument, as in :mod:`.strategies`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from hypothesis import strategies as st

from ..protocol import get_codec

T = TypeVar("T")

__all__ = [
    "DOUBLE_EXACT_LIMIT",
    "EDGE_FLOATS",
    "EDGE_INTS_JSON",
    "EDGE_INTS_MSGPACK",
    "MAX_NEST_DEPTH",
    "NASTY_STRINGS",
    "JsonStyle",
    "args_objects",
    "edge_numbers",
    "encode_payload",
    "evenly",
    "json_styles",
    "large_values",
    "nasty_texts",
    "texts",
    "values",
]


def evenly(options: Sequence[st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """Pick one of ``options`` with equal odds (``one_of`` weighs by inner structure)."""
    return st.integers(0, len(options) - 1).flatmap(lambda index: options[index])


# How deep the "deeply nested" values go.  Far deeper than real payloads, yet
# well inside what every mainstream JSON and MessagePack library accepts by
# default (CPython's json and msgpack-python both handle ~1000 levels), so a
# failure here is the bridge's, not a library limit the spec never mentions.
MAX_NEST_DEPTH: Final = 100
# The size classes' maxima: far past the limits broken bridges have been seen
# with (a 64 KiB string or binary buffer, 1,000 keys), far below §2.3's 64 MiB
# frame, and small enough that a few hundred examples stay quick.
LONG_TEXT_MAX: Final = 100_000
BIG_BINARY_MAX: Final = 1024 * 1024
MANY_KEYS_MAX: Final = 4096
# A long text repeats one of these: ASCII, two-, three- and four-byte UTF-8.
LONG_TEXT_CHARS: Final = ("a", "\u00e9", "\u2028", "\U0001f40d")

# Integers at the edges that bridges get wrong: JSON's interoperable range ends
# at ±(2^53 - 1) (§3.1 MUST inside, SHOULD beyond); MessagePack carries
# -2^63 .. 2^64 - 1 exactly (int64 and uint64 encodings).
DOUBLE_EXACT_LIMIT: Final = 2**53
EDGE_INTS_MSGPACK: Final = (
    0,
    -1,
    127,
    128,
    -32,
    -33,
    255,
    256,
    2**15,
    2**16,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**32 - 1,
    2**32,
    DOUBLE_EXACT_LIMIT - 1,
    DOUBLE_EXACT_LIMIT,
    DOUBLE_EXACT_LIMIT + 1,
    -(DOUBLE_EXACT_LIMIT - 1),
    -DOUBLE_EXACT_LIMIT,
    -(DOUBLE_EXACT_LIMIT + 1),
    2**63 - 1,
    2**63,
    -(2**63),
    2**64 - 1,
)
# JSON numbers have no size limit; ours stop at 2^128 (far past every native
# integer type, far below CPython's 4300-digit int parsing guard).
JSON_INT_LIMIT: Final = 2**128
EDGE_INTS_JSON: Final = (*EDGE_INTS_MSGPACK, 2**64, -(2**63) - 1, -(2**64), JSON_INT_LIMIT)

EDGE_FLOATS: Final = (
    0.0,
    -0.0,
    5e-324,  # smallest subnormal
    -5e-324,
    2.2250738585072014e-308,  # smallest normal
    1.7976931348623157e308,  # largest finite
    -1.7976931348623157e308,
    float(DOUBLE_EXACT_LIMIT),
    float(DOUBLE_EXACT_LIMIT) + 2.0,
    0.1,
    1e16,
    1e21,
    1e22,
    1e-7,
    123456789.12345679,
)
_NON_FINITE: Final = (math.inf, -math.inf, math.nan)

# Strings that break hand-written escapers, UTF-8 handling and line-based
# readers: NUL, the JSON-legal but JavaScript-hostile line separators, BOM and
# non-characters, astral characters (surrogate pairs in UTF-16), combining
# marks, bidi overrides, C1 controls, text that looks like other JSON tokens.
NASTY_STRINGS: Final = (
    "",
    "\x00",
    "a\x00b",
    "\u2028",
    "\u2029",
    "\ufeff",
    "\ufffe",
    "\uffff",
    "\U0001f600",
    "\U0010ffff",
    "e\u0301",
    "\u202e",
    "\x7f",
    "\x85",
    "\x1b[31m",
    '"\\/',
    "\r\n\t",
    "\n",
    "null",
    "NaN",
    "-Infinity",
    "1e400",
    "\u00e9",
    "\u0800",
    "\U00010000",
    "\\u0000",
    "}",
    "stored.x",
    "\u00a0",  # no-break space
    "\u200b",  # zero-width space
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # emoji joined by ZWJ
    "\U0001f1fa\U0001f1f8",  # a flag: two regional indicators
    "\u00df",  # changes length when upper-cased
    "\u0130",  # changes length when lower-cased
    "\ufb01",  # a ligature
    "\u0301",  # a lone combining mark
    "\u4e2d\u6587",
    "\u0645\u0631\u062d\u0628\u0627",  # right-to-left text
    "\u2066x\u2069",  # bidi isolates
    "\ufdd0",  # a non-character
    "\U000e0001",  # a tag character
    "\x08\x0c\x1f",
    "\u0080\u07ff",  # the ends of the two-byte UTF-8 range
    "x" * 300,
)
# Lone surrogates: representable only as JSON escapes.
LONE_SURROGATES: Final = ("\ud800", "\udbff", "\udc00", "\udfff", "a\ud800b")


def _json_normal(text: str) -> str:
    # A high surrogate followed by a low one is written as two escapes, which
    # every JSON decoder (rightly) joins into one astral character; carry the
    # joined form, so "what the codec can carry" round-trips exactly.
    result: str = json.loads(json.dumps(text))
    return result


@functools.cache
def nasty_texts(codec: str) -> st.SearchStrategy[str]:
    """The hand-picked edge cases (lone surrogates too under JSON)."""
    pool = NASTY_STRINGS + (LONE_SURROGATES if codec == "json" else ())
    return st.sampled_from(pool)


@functools.cache
def texts(codec: str, *, max_size: int = 24) -> st.SearchStrategy[str]:
    """Strings the codec can carry, biased towards edge cases, alone or inside other text."""
    plain = st.text(st.characters(codec="utf-8"), max_size=max_size)
    nasty = nasty_texts(codec)
    embedded = st.builds(lambda a, n, b: a + n + b, plain, nasty, plain)
    if codec == "json":
        surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
        mixed = st.text(st.one_of(st.characters(codec="utf-8"), surrogate), max_size=max_size)
        return evenly([plain, nasty, embedded.map(_json_normal), mixed.map(_json_normal)])
    return evenly([plain, nasty, embedded])


@functools.cache
def integers(codec: str) -> st.SearchStrategy[int]:
    """Integers the codec carries exactly, with their edges."""
    edges: tuple[int, ...]
    if codec in ("json", "grpc"):  # gRPC map values are JSON texts (§8.3)
        edges = EDGE_INTS_JSON
        wide = st.integers(min_value=-JSON_INT_LIMIT, max_value=JSON_INT_LIMIT)
    else:
        edges = EDGE_INTS_MSGPACK
        wide = st.integers(min_value=-(2**63), max_value=2**64 - 1)
    near53 = st.integers(min_value=-4, max_value=4).map(lambda d: DOUBLE_EXACT_LIMIT + d)
    return st.one_of(st.integers(-1000, 1000), st.sampled_from(edges), near53, wide)


@functools.cache
def floats(codec: str) -> st.SearchStrategy[float]:
    """Floats the codec carries (non-finite ones only under MessagePack, §3.1)."""
    if codec in ("json", "grpc"):
        return st.one_of(
            st.sampled_from(EDGE_FLOATS), st.floats(allow_nan=False, allow_infinity=False)
        )
    return st.one_of(st.sampled_from(EDGE_FLOATS + _NON_FINITE), st.floats())


@functools.cache
def scalars(codec: str) -> st.SearchStrategy[Any]:
    options: list[st.SearchStrategy[Any]] = [
        st.none(),
        st.booleans(),
        integers(codec),
        floats(codec),
        texts(codec),
    ]
    if codec == "msgpack":
        options.append(st.binary(max_size=24))
    return st.one_of(options)


def _nest(leaf: Any, shape: Sequence[str]) -> Any:
    value = leaf
    for kind in reversed(shape):
        value = [value] if kind == "list" else {"k": value}
    return value


@functools.cache
def deep_values(codec: str) -> st.SearchStrategy[Any]:
    """A scalar wrapped in up to MAX_NEST_DEPTH lists and objects."""
    shapes = st.lists(st.sampled_from(("list", "dict")), min_size=1, max_size=MAX_NEST_DEPTH)
    return st.builds(_nest, scalars(codec), shapes)


@functools.cache
def values(codec: str, *, max_leaves: int = 24) -> st.SearchStrategy[Any]:
    """Any value the codec can carry (§3.1, §3.2), nested and deep."""
    keys = texts(codec, max_size=12)

    def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.lists(children, max_size=6), st.dictionaries(keys, children, max_size=6)
        )

    nested = st.recursive(scalars(codec), containers, max_leaves=max_leaves)
    return st.one_of(nested, deep_values(codec))


@functools.cache
def edge_numbers(codec: str) -> st.SearchStrategy[int | float]:
    """Only the hand-picked edge integers and floats the codec carries."""
    ints = EDGE_INTS_JSON if codec in ("json", "grpc") else EDGE_INTS_MSGPACK
    floats_ = EDGE_FLOATS + (_NON_FINITE if codec == "msgpack" else ())
    return st.one_of(st.sampled_from(ints), st.sampled_from(floats_))


def _nest_to(depth: int) -> st.SearchStrategy[Any]:
    """A scalar inside exactly ``depth`` containers, lists and objects mixed."""
    kinds = st.lists(st.sampled_from(("list", "dict")), min_size=depth, max_size=depth)
    return st.builds(_nest, st.integers(-1, 1), kinds)


def _long_text(char: str, length: int) -> str:
    return char * length


def _binary(length: int) -> bytes:
    # Every byte value, repeated: NULs, 0xFF and invalid UTF-8 in every binary.
    return (bytes(range(256)) * (length // 256 + 1))[:length]


def large_values(codec: str) -> dict[str, st.SearchStrategy[Any]]:
    """The size edge classes, one optional ``args`` entry each (issue 14.2).

    Each size is drawn by :func:`_up_to`, so about one example in four holds
    the class's maximum whatever the threshold a broken bridge has, and
    shrinking then looks for the size that breaks it.  ``values`` alone reaches
    these sizes too rarely (a nested value's depth is a sum of short lists).
    """
    sizes = {
        "deep": _up_to(MAX_NEST_DEPTH).flatmap(_nest_to),
        "long text": st.builds(_long_text, st.sampled_from(LONG_TEXT_CHARS), _up_to(LONG_TEXT_MAX)),
        "many keys": _up_to(MANY_KEYS_MAX).map(lambda n: {f"k{i}": i for i in range(n)}),
    }
    if codec == "msgpack":
        sizes["big binary"] = _up_to(BIG_BINARY_MAX).map(_binary)
    return sizes


def _up_to(maximum: int) -> st.SearchStrategy[int]:
    """A size from 1 to ``maximum``, the maximum itself about half the time.

    Hypothesis draws bounded integers mostly small (a depth of 99 or more came
    in 1% of examples), which would leave a bridge that breaks only near the
    top of a class unfound in most runs.  The integer comes first so that
    shrinking moves towards it and then to the smallest size that still fails.
    """
    return st.one_of(st.integers(1, maximum), st.just(maximum))


@functools.cache
def args_objects(codec: str, *, large: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """An ``args`` object (§4.1) holding arbitrary values.

    Most also carry short lists of hand-picked edge strings and numbers, so a
    bridge broken by one particular string or number meets it within a few
    dozen examples rather than by luck; shrinking then keeps only the culprit.
    With ``large`` (the single-request ``echo`` property), the size classes of
    :func:`large_values` too: pipelined and stateful sessions stay small, as
    megabytes of requests written before any answer is read would only test
    the pipe's buffer.
    """
    strings = NASTY_STRINGS + (LONE_SURROGATES if codec == "json" else ())
    ints = EDGE_INTS_JSON if codec in ("json", "grpc") else EDGE_INTS_MSGPACK
    every_number = [*ints, *EDGE_FLOATS, *(_NON_FINITE if codec == "msgpack" else ())]
    edges = st.fixed_dictionaries(
        {},
        optional={
            # A few at a time, or (a sweep) all of them at once.
            "edge strings": st.one_of(
                st.lists(nasty_texts(codec), min_size=2, max_size=10), st.just(list(strings))
            ),
            "edge numbers": st.one_of(
                st.lists(edge_numbers(codec), min_size=2, max_size=8), st.just(every_number)
            ),
            **(large_values(codec) if large else {}),
        },
    )
    return st.builds(
        lambda free, extra: {**free, **extra},
        st.dictionaries(texts(codec, max_size=12), values(codec), max_size=5),
        edges,
    )


# -- payload encodings --------------------------------------------------------


@dataclass(frozen=True)
class JsonStyle:
    """How a JSON text is written: both choices are valid RFC 8259 output."""

    ascii_only: bool  # \\uXXXX escapes (what Python emits) or raw UTF-8 (what Jason emits)
    spaced: bool  # ", " and ": " separators and a trailing newline, or compact


@functools.cache
def json_styles() -> st.SearchStrategy[JsonStyle]:
    return st.builds(JsonStyle, st.booleans(), st.booleans())


COMPACT_ASCII: Final = JsonStyle(ascii_only=True, spaced=False)


def encode_payload(value: Any, codec: str, style: JsonStyle = COMPACT_ASCII) -> bytes:
    """Encode ``value`` for the wire; JSON in the given style (escapes where UTF-8 cannot)."""
    if codec != "json":
        return get_codec(codec).encode(value)
    separators = (", ", ": ") if style.spaced else (",", ":")
    text = json.dumps(value, allow_nan=False, separators=separators, ensure_ascii=style.ascii_only)
    if style.spaced:
        text += "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates have no UTF-8 form; only escapes can carry them.
        return json.dumps(value, allow_nan=False, separators=separators).encode("ascii")
