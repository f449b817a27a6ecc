"""Hypothesis strategies for the Snakepit wire protocol: requests and broken frames.

Built on the value strategies of :mod:`.values` (what each codec can carry),
all pure (no I/O):

* **requests** for each profile's commands (§6, §7.3), in the payload
  encodings a real host may send;
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from hypothesis import strategies as st

from ..protocol import HEADER_SIZE, encode_frame, encode_header, get_codec
from .values import (
    DOUBLE_EXACT_LIMIT,
    EDGE_FLOATS,
    args_objects,
    encode_payload,
    evenly,
    integers,
    json_styles,
    scalars,
    texts,
    values,
)

__all__ = [
    "BREAKS_FRAMING",
    "OPERATIONS",
    "PROFILE_COMMANDS",
    "Expectation",
    "SplitPlan",
    "Step",
    "compute_requests",
    "frame",
    "frame_steps",
    "invalid_steps",
    "numbers",
    "request_ids",
    "split_plans",
    "valid_steps",
]

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
        st.sampled_from([DOUBLE_EXACT_LIMIT + 1, 2**63 - 1, 2**64 - 1, 0, -1]),
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
