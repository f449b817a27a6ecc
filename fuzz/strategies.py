"""Hypothesis strategies for the Snakepit wire protocol: values, requests and broken frames.

Three families, all pure (no I/O):

* **values** each codec can carry (PROTOCOL.md §3): deep nesting, unicode edge
  cases (lone surrogates exist only under JSON's ``\\uXXXX`` escapes; MessagePack
  strings are UTF-8 and cannot hold them), integers past 2^53 and at the 64-bit
  limits, floats including ``-0.0`` (never NaN/infinity under JSON), and bytes
  under MessagePack only;
* **requests** for each profile's commands (§6, §7.3) and the **payload
  encodings** a real host may send (compact or spaced JSON, ``\\u`` escapes or
  raw UTF-8), so a bridge meets the same value in several byte forms;
* **mutated frames**: payload-level damage that leaves the framing intact
  (garbage, non-object payloads, bad envelopes, trailing bytes, zero length) and
  framing-level damage that desynchronises the stream (truncated headers, lengths
  off by one, oversize lengths, stray bytes between frames); plus the ways a
  byte stream can be cut into writes (whole frames, byte by byte, coalesced, or
  split at chosen offsets).

Builders are cached per argument: a property draws from them on every
example, and building (and validating) a strategy tree each time costs more
than the draw.  Hypothesis is imported at module level: this module is only imported by the
fuzz runner and tests, never by the CLI at start-up.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from hypothesis import strategies as st

from ..protocol import HEADER_SIZE, encode_frame, encode_header, get_codec

T = TypeVar("T")

__all__ = [
    "BREAKS_FRAMING",
    "EDGE_FLOATS",
    "EDGE_INTS_JSON",
    "EDGE_INTS_MSGPACK",
    "MAX_NEST_DEPTH",
    "NASTY_STRINGS",
    "OPERATIONS",
    "PROFILE_COMMANDS",
    "Expectation",
    "Step",
    "args_objects",
    "compute_requests",
    "edge_numbers",
    "encode_payload",
    "frame_steps",
    "invalid_steps",
    "json_styles",
    "nasty_texts",
    "numbers",
    "request_ids",
    "split_plans",
    "texts",
    "valid_steps",
    "values",
]

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
_P53: Final = 2**53
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
    _P53 - 1,
    _P53,
    _P53 + 1,
    -(_P53 - 1),
    -_P53,
    -(_P53 + 1),
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
    float(_P53),
    float(_P53) + 2.0,
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
    near53 = st.integers(min_value=-4, max_value=4).map(lambda d: _P53 + d)
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


# -- requests -----------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """What a correct bridge answers to one valid request.

    ``kind`` is one of: ``ok`` (success with ``result.status == "ok"``),
    ``echo`` (``result.echoed`` equals ``value``), ``compute`` (``value`` is
    ``(operation, a, b)``, checked against Python arithmetic), ``failure``
    (``success: false``, or the legacy unknown-command form of §4.4), and
    ``envelope`` (only §4.2's shape is checked: the store commands, whose state
    the stateful machine checks).
    """

    kind: str
    value: Any = None


@dataclass(frozen=True)
class Step:
    """One frame to send: its exact bytes and, for a valid request, what it asks."""

    wire: bytes
    label: str
    request: dict[str, Any] | None = None  # the decoded request when it is valid
    expect: Expectation | None = None
    # An id the bridge could read from a malformed frame and echo (§4.3).
    loose_id: Any = None
    # True when the bytes desynchronise the framing: only end of input may follow.
    breaks_framing: bool = False

    @property
    def request_id(self) -> Any:
        return None if self.request is None else self.request["id"]


BREAKS_FRAMING: Final = "breaks framing"

# The generic commands (§6) every stdio profile answers, and the store (§7.3).
GENERIC_COMMANDS: Final = ("ping", "echo", "compute", "info")
STORE_COMMANDS: Final = ("store", "retrieve", "list_stored", "delete_stored", "clear_session")
PROFILE_COMMANDS: Final[dict[str, tuple[str, ...]]] = {
    "v1": GENERIC_COMMANDS,
    "v2": GENERIC_COMMANDS,
    "enhanced": GENERIC_COMMANDS + STORE_COMMANDS + ("call", "pipeline", "inspect"),
    "grpc": GENERIC_COMMANDS,
}

OPERATIONS: Final = ("add", "subtract", "multiply", "divide")


@functools.cache
def request_ids(codec: str) -> st.SearchStrategy[Any]:
    """Request ids (§4.1): hosts use positive integers; strings and big ones are legal."""
    return st.one_of(
        st.integers(min_value=1, max_value=2**31 - 1),
        st.sampled_from([_P53 + 1, 2**63 - 1, 2**64 - 1, 0, -1]),
        texts(codec, max_size=8),
    )


@functools.cache
def numbers(codec: str) -> st.SearchStrategy[int | float]:
    """Operands for ``compute`` (§6.3): integers to the codec's limits and finite floats."""
    return st.one_of(
        integers(codec),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(EDGE_FLOATS),
    )


_NON_NUMBERS: Final = st.one_of(
    st.none(), st.text(max_size=4), st.lists(st.integers(-9, 9), max_size=2)
)


def _bare(command: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"command": command, "args": args}


def _compute(op: str, a: Any, b: Any) -> tuple[dict[str, Any], Expectation]:
    return _bare("compute", {"operation": op, "a": a, "b": b}), Expectation("compute", (op, a, b))


@functools.cache
def compute_requests(codec: str) -> st.SearchStrategy[tuple[dict[str, Any], Expectation]]:
    """``compute`` requests and their Python-arithmetic expectation (§6.3).

    Half are plain arithmetic on numbers (never a zero divisor: hypothesis'
    love of 0 would otherwise turn most divisions into the zero case); the
    rest divide by zero, pass a non-number, or name an unknown operation.
    """
    nonzero = numbers(codec).filter(lambda n: n != 0)
    arithmetic = st.one_of(
        st.builds(_compute, st.sampled_from(OPERATIONS[:3]), numbers(codec), numbers(codec)),
        st.builds(_compute, st.just("divide"), numbers(codec), nonzero),
    )
    zero = st.builds(_compute, st.just("divide"), numbers(codec), st.sampled_from([0, 0.0, -0.0]))
    non_number = st.one_of(
        st.builds(_compute, st.sampled_from(OPERATIONS), _NON_NUMBERS, numbers(codec)),
        st.builds(_compute, st.sampled_from(OPERATIONS), numbers(codec), _NON_NUMBERS),
    )
    unknown = st.builds(
        lambda op, a, b: (
            _bare("compute", {"operation": op, "a": a, "b": b}),
            Expectation("failure"),
        ),
        st.sampled_from(["power", "modulo", "", "ADD", "add "]),
        st.integers(-9, 9),
        st.integers(-9, 9),
    )
    return evenly([arithmetic, arithmetic, arithmetic, zero, non_number, unknown])


_Drawn = tuple[dict[str, Any], Expectation]


@functools.cache
def _requests_for(profile: str, codec: str) -> st.SearchStrategy[_Drawn]:
    ping_args = st.fixed_dictionaries(
        {},
        optional={
            "worker_id": texts(codec, max_size=8),
            "health_check": st.just(True),
            "initialization": st.just(True),
        },
    )
    echo = args_objects(codec).map(lambda a: (_bare("echo", a), Expectation("echo", a)))
    options: list[st.SearchStrategy[_Drawn]] = [
        ping_args.map(lambda a: (_bare("ping", a), Expectation("ok"))),
        echo,
        echo,
        compute_requests(codec),
        st.just((_bare("info", {}), Expectation("ok"))),
        texts(codec, max_size=10)
        .filter(lambda name: name not in PROFILE_COMMANDS[profile])
        .map(lambda name: (_bare(name, {}), Expectation("failure"))),
    ]
    if profile == "enhanced":
        session = st.sampled_from(["", "s1", "s\u00e9"])
        object_id = st.sampled_from(["a", "b", "\U0001f600"])
        options += [
            st.builds(
                lambda s, i, v: _bare("store", {"session_id": s, "id": i, "value": v}),
                session,
                object_id,
                values(codec, max_leaves=6).filter(lambda v: not isinstance(v, bytes)),
            ).map(lambda r: (r, Expectation("envelope"))),
            st.builds(
                lambda c, s, i: _bare(c, {"session_id": s, "id": i}),
                st.sampled_from(["retrieve", "delete_stored", "list_stored", "clear_session"]),
                session,
                object_id,
            ).map(lambda r: (r, Expectation("envelope"))),
            st.sampled_from(["math.floor", "math.sqrt", "statistics.mean"]).map(
                lambda t: (_bare("call", {"target": t, "args": [[4.0]]}), Expectation("envelope"))
            ),
        ]
    return evenly(options)


@st.composite
def valid_steps(
    draw: st.DrawFn, profile: str, codec: str, *, min_size: int = 1, max_size: int = 6
) -> list[Step]:
    """A run of valid requests (unique ids), each encoded in a drawn style."""
    bodies = draw(st.lists(_requests_for(profile, codec), min_size=min_size, max_size=max_size))
    ids = draw(
        st.lists(request_ids(codec), min_size=len(bodies), max_size=len(bodies), unique_by=_id_key)
    )
    steps = []
    for (body, expect), request_id in zip(bodies, ids, strict=True):
        request = {"id": request_id, **body}
        if draw(st.booleans()):
            request["timestamp"] = "2026-01-01T00:00:00Z"  # optional, ignored (§4.1)
        style = draw(json_styles())
        steps.append(
            Step(
                wire=frame(encode_payload(request, codec, style)),
                label=f"valid {body['command']!r} request",
                request=request,
                expect=expect,
            )
        )
    return steps


def _id_key(value: Any) -> tuple[str, Any]:
    # 1 and "1" (and True) are different ids; keep type in the uniqueness key.
    return (type(value).__name__, value)


# A whole frame is the protocol core's business (§2.1): the fuzzer frames valid
# payloads exactly as every other host does, and damages frames only on purpose.
frame: Final = encode_frame


# -- malformed frames ---------------------------------------------------------

# Malformed frames that carry an id use ids from this range, apart from the
# valid requests' (positive, or strings), so a response can be attributed.
_LOOSE_IDS: Final = st.integers(min_value=-(2**31), max_value=-2)


def _not_a_request(codec: str) -> Callable[[bytes], bool]:
    def check(payload: bytes) -> bool:
        try:
            value = get_codec(codec).decode(payload)
        except Exception:
            return True
        return not (
            isinstance(value, dict)
            and isinstance(value.get("command"), str)
            and isinstance(value.get("args", {}), dict)
        )

    return check


def evenly(options: Sequence[st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """Pick one of ``options`` with equal odds (``one_of`` weighs by inner structure)."""
    return st.integers(0, len(options) - 1).flatmap(lambda index: options[index])


def _readable_id(codec: str, payload: bytes) -> Any:
    """The id a bridge could read from a malformed payload (None when there is none)."""
    try:
        value = get_codec(codec).decode(payload)
    except Exception:
        return None
    return value.get("id") if isinstance(value, dict) else None


@functools.cache
def _payload_damage(codec: str, *, huge: bool = True) -> st.SearchStrategy[Step]:
    """Frames whose framing is intact but whose payload is not a valid request (§4.3).

    ``huge=False`` leaves out the 50-100 KB nesting bombs (for byte-by-byte writes).
    """

    def step(label: str, payload: bytes, loose_id: Any = None) -> Step:
        return Step(wire=frame(payload), label=label, loose_id=loose_id)

    non_objects = st.one_of(st.lists(integers(codec), max_size=3), scalars(codec))
    bad_envelopes = st.builds(
        lambda i, fields: (i, {"id": i, **fields}),
        _LOOSE_IDS,
        st.one_of(
            st.just({"args": {}}),  # no command
            st.builds(
                lambda c: {"command": c, "args": {}},
                st.one_of(integers(codec), st.none(), st.lists(st.text(), max_size=2)),
            ),
            st.builds(lambda a: {"command": "echo", "args": a}, non_objects),
        ),
    )
    trailing = st.builds(
        lambda i, tail: step(
            "valid request followed by trailing bytes",
            encode_payload({"id": i, "command": "ping", "args": {}}, codec) + tail,
            i,
        ),
        _LOOSE_IDS,
        st.sampled_from([b"x", b"}", b"\x00", b"\xc1", b"{}", b"1"]),
    )
    options = [
        st.binary(min_size=1, max_size=64)
        .filter(_not_a_request(codec))
        .map(lambda b: step("garbage payload", b, _readable_id(codec, b))),
        non_objects.map(
            lambda v: step(f"non-object payload ({type(v).__name__})", encode_payload(v, codec))
        ),
        bad_envelopes.map(
            lambda p: step("request with a bad envelope", encode_payload(p[1], codec), p[0])
        ),
        trailing,
        st.just(step("zero-length payload (§2.4)", b"")),
    ]
    bombs = (b"[" * 100_000, b'{"a":' * 50_000) if codec == "json" else (b"\x91" * 100_000,)
    broken = (*(_BROKEN_JSON if codec == "json" else _BROKEN_MSGPACK), *(bombs if huge else ()))
    options.append(
        st.sampled_from(broken).map(lambda b: step(f"payload that is not valid {codec}", b, -5))
    )
    return evenly(options)


# Hand-picked payloads each codec's decoder must reject without dying.
_BROKEN_JSON: Final = (
    b'{"id": -5, "command": "echo", "args": {"x": NaN}}',
    b'{"id": -5, "command": "echo", "args": {"x": Infinity}}',
    b'{"id": -5, "command": "\xff\xfe", "args": {}}',
    b'{"id": -5, "command": "echo", "args": {"x": "\xed\xa0\x80"}}',  # UTF-8 of a surrogate
    b'\xef\xbb\xbf{"id": -5, "command": "ping", "args": {}}',  # byte order mark
    b"{'id': -5}",
)
_BROKEN_MSGPACK: Final = (
    b"\xdd\xff\xff\xff\xff",  # array32 announcing 4G items, none sent
    b"\xdb\xff\xff\xff\xf0abc",  # str32 announcing 4 GiB
    b"\x81\x01\x02",  # map with an integer key (§3.2: keys are strings)
    b"\xa3\xff\xfe\xfd",  # str that is not UTF-8
    b"\xc1",  # the never-used byte
)


@functools.cache
def _framing_damage(codec: str) -> st.SearchStrategy[Step]:
    """Bytes that desynchronise the framing; end of input must follow (§2.3, §2.5)."""
    payload = encode_payload({"id": -7, "command": "ping", "args": {}}, codec)

    def step(label: str, wire: bytes) -> Step:
        return Step(
            wire=wire, label=f"{label} ({BREAKS_FRAMING})", loose_id=-7, breaks_framing=True
        )

    return evenly(
        [
            st.integers(1, HEADER_SIZE - 1).map(
                lambda n: step(f"header truncated to {n} bytes", frame(payload)[:n])
            ),
            st.integers(0, len(payload) - 1).map(
                lambda n: step(f"payload truncated to {n} bytes", frame(payload)[: HEADER_SIZE + n])
            ),
            st.sampled_from([-1, 1]).map(
                lambda d: step(f"length off by {d:+d}", encode_header(len(payload) + d) + payload)
            ),
            st.sampled_from([2**32 - 1, 2**31, 64 * 1024 * 1024 + 1, 2**30]).map(
                lambda n: step(f"oversize length {n}", encode_header(n) + payload)
            ),
            st.binary(min_size=1, max_size=3).map(
                lambda b: step(f"{len(b)} stray bytes after a frame", frame(payload) + b)
            ),
        ]
    )


@functools.cache
def invalid_steps(codec: str) -> st.SearchStrategy[Step]:
    """Any frame that is not a valid request: payload damage mostly, framing damage too."""
    return evenly([_payload_damage(codec), _payload_damage(codec), _framing_damage(codec)])


@st.composite
def frame_steps(
    draw: st.DrawFn,
    profile: str,
    codec: str,
    *,
    allow_framing_damage: bool = True,
    huge: bool = True,
) -> list[Step]:
    """Valid requests with malformed frames among them; framing damage only last."""
    valid = draw(valid_steps(profile, codec, min_size=0, max_size=4))
    payload_damage = _payload_damage(codec, huge=huge)
    damage = invalid_steps(codec) if allow_framing_damage else payload_damage
    broken = draw(st.lists(payload_damage, min_size=0, max_size=3))
    steps = list(valid)
    for item in broken:
        steps.insert(draw(st.integers(0, len(steps))), item)
    last = draw(damage)
    if last.breaks_framing:
        steps.append(last)
    else:
        steps.insert(draw(st.integers(0, len(steps))), last)
    return steps


# -- write plans --------------------------------------------------------------


@dataclass(frozen=True)
class SplitPlan:
    """How a byte stream is cut into separate writes."""

    name: str
    cuts: tuple[int, ...] = field(default=())  # offsets where a new write starts

    def chunks(self, data: bytes) -> list[bytes]:
        bounds = [0, *sorted({c for c in self.cuts if 0 < c < len(data)}), len(data)]
        return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def split_plans(total: int) -> st.SearchStrategy[SplitPlan]:
    """Cut points for a stream of ``total`` bytes (1 to 8 cuts anywhere)."""
    if total < 2:
        return st.just(SplitPlan("split", ()))
    return st.lists(st.integers(1, total - 1), min_size=1, max_size=8, unique=True).map(
        lambda cuts: SplitPlan("split", tuple(sorted(cuts)))
    )
