"""§3 Codecs and negotiation: integers, str/bin, bounded decoding, 0x83, §3.4.

Spec decisions:

* Only ``echo`` and ``compute`` are available to provoke values, so: strict
  JSON output and §4.6 are tested with ``compute multiply 1e308 * 10`` (an
  infinite float: unencodable under JSON, so ``serialization_error``); under
  MessagePack the same product is an ordinary float64 infinity and must come
  back as the arithmetic result.  No §6 command can produce an unencodable
  value under MessagePack, so ``messages.unencodable-result`` is JSON-only.
* Integers: within ±(2^53-1) JSON must carry them exactly (required);
  beyond, exactness is SHOULD (recommended case).  MessagePack carries the
  whole int64/uint64 range, so echoing its extremes is required (§6.2).
* Negotiation cases need a bridge in auto mode, which is what
  ``--codec negotiate`` declares; they run only then.  A v2 bridge must
  support MessagePack, so choosing JSON when MessagePack is preferred is
  NON-STRICT (a SHOULD), not FAIL.
* Bounded decoding (§3.2) sends tiny MessagePack payloads that claim a
  4-billion-item array and a 4 GiB string; the bridge must keep answering
  and not grow its memory by gigabytes.
"""

from __future__ import annotations

import math
from typing import Any, Final

from snakepit_harness.errors import BridgeTimeout
from snakepit_harness.protocol import NEGOTIATION_OFFER, encode_frame, get_codec

from ..drivers.stdio import StdioCaseContext
from ..model import BridgeUse, CaseFailed
from ..probes import (
    expect_alive,
    grade_failure,
    group_memory,
    is_ping_answer,
    memory_growth,
)
from ..registry import V2_AND_UP
from ._transport import STDIO_CASES

# A float product that overflows to infinity on every IEEE-754 platform.
OVERFLOW_ARGS: Final = {"operation": "multiply", "a": 1e308, "b": 10}
# Tokens §3.1 forbids in JSON output.
NON_STANDARD_TOKENS: Final = (b"NaN", b"Infinity")
# Memory growth that counts as sizing a buffer from a length field (§3.2).
DECODE_ALLOCATION_LIMIT: Final = 512 * 1024 * 1024
# How often memory is sampled while an answer is awaited.
MEMORY_POLL: Final = 0.1

# Every stdio profile, every codec mode.
_case: Final = STDIO_CASES
# A case about one codec runs in the modes that may speak it: that codec fixed,
# and negotiation (which may select another; the case then skips).
_json_case: Final = STDIO_CASES.preset(codecs=("json", "negotiate"))
# MessagePack is a v2 codec (§3.2), so its cases are v2 and up.
_msgpack_case: Final = STDIO_CASES.for_profiles(V2_AND_UP).preset(codecs=("msgpack", "negotiate"))
# §3.4: only a bridge in auto mode (``--codec negotiate``) negotiates, in its
# first frame, so these cases start the bridge as a host does (raw) and speak first.
_negotiation_case: Final = STDIO_CASES.for_profiles(V2_AND_UP).preset(
    codecs=("negotiate",), bridge=BridgeUse.RAW
)


def _echo(ctx: StdioCaseContext, args: dict[str, Any]) -> Any:
    reply = ctx.request({"id": ctx.next_id(), "command": "echo", "args": args})
    if not isinstance(reply, dict) or not isinstance(reply.get("result"), dict):
        raise CaseFailed(f"echo did not answer with a result object: {reply!r}"[:300])
    return reply["result"].get("echoed")


def _require_codec(ctx: StdioCaseContext, name: str) -> None:
    if ctx.codec_name != name:
        ctx.skip(f"needs the {name} codec (this run speaks {ctx.codec_name})")


@_json_case("messages.unencodable-result", section="4.6", level="required")
def unencodable_result(ctx: StdioCaseContext) -> None:
    """A result the codec cannot carry (an infinite float under JSON) is answered success false with
    serialization_error, as strict JSON, and the bridge keeps serving.
    """
    _require_codec(ctx, "json")
    ctx.send_value({"id": 401, "command": "compute", "args": OVERFLOW_ARGS})
    payload = ctx.read_frame()
    token = next((t for t in NON_STANDARD_TOKENS if t in payload), None)
    if token is not None:
        raise CaseFailed(
            f"the answer contains the non-standard JSON token {token.decode()} (§3.1: output "
            f"must be strict JSON): {payload[:200]!r}"
        )
    reply = ctx.decode(payload)
    form = grade_failure(
        ctx,
        reply,
        what="an infinite compute result under JSON",
        error_types=frozenset({"serialization_error"}),
        legacy_allowed=False,
    )
    if form == "modern" and reply.get("error_type") != "serialization_error":
        raise CaseFailed(
            f"error_type must be serialization_error (§4.6), got {reply.get('error_type')!r}"
        )
    expect_alive(ctx, "after an unencodable result")


@_msgpack_case("codecs.msgpack.non-finite-float", section="6.3", level="required")
def msgpack_infinity(ctx: StdioCaseContext) -> None:
    """Under MessagePack an overflowing compute result is carried as a float infinity."""
    _require_codec(ctx, "msgpack")
    reply = ctx.request({"id": 402, "command": "compute", "args": OVERFLOW_ARGS})
    result = reply.get("result") if isinstance(reply, dict) else None
    value = result.get("result") if isinstance(result, dict) else None
    ctx.require(
        isinstance(value, float) and math.isinf(value) and value > 0,
        f"expected result +inf (a float64), got {reply!r}"[:300],
    )


@_case("codecs.json.safe-integers", section="3.1", level="required")
def json_safe_integers(ctx: StdioCaseContext) -> None:
    """Integers within ±(2^53-1) come back from echo exactly."""
    args = {"max": 2**53 - 1, "min": -(2**53 - 1), "zero": 0, "neg": -1, "big": 2**40 + 3}
    echoed = _echo(ctx, args)
    ctx.require_match(echoed, {"$eq": args}, "echoed integers")
    for key in args:
        ctx.require(
            isinstance(echoed[key], int) or float(echoed[key]).is_integer(),
            f"{key}: {echoed[key]!r} is not an integer",
        )


@_json_case("codecs.json.big-integers", section="3.1", level="recommended")
def json_big_integers(ctx: StdioCaseContext) -> None:
    """Integers beyond ±(2^53-1) come back from echo exactly."""
    _require_codec(ctx, "json")
    args = {"u64max_plus": 2**64 + 1, "i64min_minus": -(2**63) - 1, "huge": 10**30 + 7}
    echoed = _echo(ctx, args)
    ctx.recommend_match(echoed, {"$eq": args}, "integers beyond 2^53")


@_msgpack_case("codecs.msgpack.integers", section="6.2", level="required")
def msgpack_integers(ctx: StdioCaseContext) -> None:
    """Under MessagePack, integers across the int64/uint64 range come back exactly."""
    _require_codec(ctx, "msgpack")
    args = {
        "u64max": 2**64 - 1,
        "i64min": -(2**63),
        "u32": 2**32,
        "i32min_minus": -(2**31) - 1,
        "small_neg": -33,
    }
    echoed = _echo(ctx, args)
    ctx.require_match(echoed, {"$eq": args}, "echoed integers")


@_msgpack_case("codecs.msgpack.bin-preserved", section="3.2", level="recommended")
def msgpack_bin(ctx: StdioCaseContext) -> None:
    """Under MessagePack, bytes sent as bin come back as bin (and text as str)."""
    _require_codec(ctx, "msgpack")
    args = {"blob": bytes(range(256)), "empty": b"", "text": "ünïcode"}
    echoed = _echo(ctx, args)
    ctx.recommend_match(echoed, {"$eq": args}, "echoed bin/str values")


@_msgpack_case(
    "codecs.msgpack.bounded-decode", section="3.2", level="required", bridge=BridgeUse.FRESH
)
def msgpack_bounded(ctx: StdioCaseContext) -> None:
    """MessagePack decoding is bounded by the frame: length fields claiming billions of items
    neither crash the bridge nor make it allocate them.
    """
    _require_codec(ctx, "msgpack")
    before = group_memory(ctx.bridge)
    hostile = (
        b"\xdd\xff\xff\xff\xff",  # array32 of 4294967295 items, none present
        b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB, no bytes present
        b"\xdf\xff\xff\xff\xff",  # map32 of 4294967295 pairs
    )
    for payload in hostile:
        ctx.send_raw(encode_frame(payload))
        ping_id = 900000 + ctx.next_id()
        ctx.send_value({"id": ping_id, "command": "ping", "args": {}})
        # An answer to the hostile payload (SHOULD) may precede the ping's.
        # Memory is watched while waiting: a bridge busy filling a 4 GiB
        # buffer is caught allocating, not just slow.
        for _ in range(2):
            reply = _read_watching_memory(ctx, before, payload)
            if is_ping_answer(reply, ping_id):
                break
        else:
            raise CaseFailed(f"no answer to a ping after the payload {payload.hex()}")
    growth = memory_growth(before, group_memory(ctx.bridge))
    ctx.event(f"memory growth: {growth // 1024} KiB")
    ctx.require(
        growth < DECODE_ALLOCATION_LIMIT,
        f"memory grew by {growth // (1024 * 1024)} MiB decoding 5-byte payloads",
    )


def _read_watching_memory(ctx: StdioCaseContext, before: Any, payload: bytes) -> Any:
    """Read the next answer, failing as soon as the bridge's memory balloons."""
    while True:
        try:
            return ctx.read_value(MEMORY_POLL)
        except BridgeTimeout:
            growth = memory_growth(before, group_memory(ctx.bridge))
            if growth >= DECODE_ALLOCATION_LIMIT:
                raise CaseFailed(
                    f"memory grew by {growth // (1024 * 1024)} MiB on the 5-byte payload "
                    f"{payload.hex()}: the bridge allocates what a length field claims"
                ) from None
            ctx.remaining()  # TIMEOUT once the case's deadline passes


@_msgpack_case("codecs.msgpack.no-0x83", section="3.5", level="recommended")
def msgpack_no_0x83(ctx: StdioCaseContext) -> None:
    """No MessagePack response starts with the byte 0x83 (a 3-entry map), which Snakepit rejects."""
    _require_codec(ctx, "msgpack")
    requests: list[Any] = [
        {"id": 601, "command": "ping", "args": {}},
        {"id": 602, "command": "echo", "args": {}},
        {"id": 603, "command": "no_such_command_conformance", "args": {}},
        {"id": 604, "command": "compute", "args": {"operation": "divide", "a": 1, "b": 0}},
    ]
    for request in requests:
        ctx.send_value(request)
        payload = ctx.read_frame()
        ctx.recommend(
            not payload.startswith(b"\x83"),
            f"the answer to {request['command']} starts with 0x83: {payload[:40].hex()}",
        )
    ctx.send_raw(encode_frame(b"\xc1"))  # never-used byte: malformed
    ctx.send_value({"id": 605, "command": "ping", "args": {}})
    for _ in range(2):  # the malformed frame's answer (if any), then the ping's
        payload = ctx.read_frame()
        ctx.recommend(
            not payload.startswith(b"\x83"),
            f"an answer starts with 0x83: {payload[:40].hex()}",
        )
        if is_ping_answer(ctx.decode(payload), 605):
            break


# -- negotiation (§3.4) --------------------------------------------------------


def _exchange(
    ctx: StdioCaseContext, request: dict[str, Any], codec_name: str, undecodable: str, shown: int
) -> Any:
    """Send ``request`` in ``codec_name`` and decode the answer in it; FAIL with
    ``undecodable`` and the answer's first ``shown`` bytes (hex) if it is not."""
    codec = get_codec(codec_name)
    ctx.send_value(request, codec=codec)
    payload = ctx.read_frame()
    try:
        return codec.decode(payload)
    except Exception as exc:
        raise CaseFailed(f"{undecodable}: {payload[:shown].hex()}") from exc


def _negotiate(ctx: StdioCaseContext, offer: dict[str, Any]) -> Any:
    reply = _exchange(
        ctx, offer, "json", "the negotiation answer is not JSON (§3.4: it MUST be)", 80
    )
    ctx.event(f"negotiation answer {reply!r}")
    ctx.require_match(
        reply,
        {"type": "protocol_selected", "protocol": {"$type": "string"}},
        "the negotiation answer",
    )
    return reply["protocol"]


def _ping_in(ctx: StdioCaseContext, codec_name: str) -> None:
    ping = {"id": 701, "command": "ping", "args": {}}
    not_in_codec = f"after selecting {codec_name}, the answer to a ping is not {codec_name}"
    reply = _exchange(ctx, ping, codec_name, not_in_codec, 60)
    ctx.require_match(reply, {"result": {"status": "ok"}}, f"a ping in {codec_name}")


def _expect_selected(
    ctx: StdioCaseContext, offer: dict[str, Any], codec_name: str, why: str
) -> None:
    """Negotiate with ``offer``; FAIL unless the bridge selects ``codec_name``, then ping in
    it.  ``why`` ends the FAIL message (after "selected 'x'"): why it had to be that codec."""
    selected = _negotiate(ctx, offer)
    ctx.require(selected == codec_name, f"selected {selected!r}{why}")
    _ping_in(ctx, codec_name)


@_negotiation_case("negotiation.preferred", section="3.4", level="required")
def negotiation_preferred(ctx: StdioCaseContext) -> None:
    """Offered msgpack and json with msgpack preferred, the bridge answers protocol_selected in JSON
    with a codec both support (SHOULD msgpack) and then uses it.
    """
    selected = _negotiate(ctx, NEGOTIATION_OFFER)
    ctx.require(selected in ("msgpack", "json"), f"selected {selected!r}, which was not offered")
    ctx.recommend(
        selected == "msgpack",
        f"selected {selected!r} although msgpack was preferred (and v2 must support it)",
    )
    _ping_in(ctx, selected)


@_negotiation_case("negotiation.json-only", section="3.4", level="required")
def negotiation_json_only(ctx: StdioCaseContext) -> None:
    """Offered only json, the bridge selects json and keeps speaking it."""
    offer = {"type": "protocol_negotiation", "supported": ["json"], "preferred": "json"}
    _expect_selected(ctx, offer, "json", " when only json was offered")


@_negotiation_case("negotiation.common-codec", section="3.4", level="required")
def negotiation_common(ctx: StdioCaseContext) -> None:
    """Offered an unknown preferred codec and json, the bridge selects json."""
    offer = {
        "type": "protocol_negotiation",
        "supported": ["cbor-conformance", "json"],
        "preferred": "cbor-conformance",
    }
    _expect_selected(ctx, offer, "json", "; json is the only common codec")


@_negotiation_case("negotiation.first-frame-request", section="3.4", level="required")
def negotiation_first_frame(ctx: StdioCaseContext) -> None:
    """When the first frame is an ordinary request, the bridge answers it in JSON and stays on
    JSON.
    """
    init = {
        "id": 1,
        "command": "ping",
        "args": {"worker_id": "conformance", "initialization": True},
    }
    not_json = "the answer to a first-frame JSON request is not JSON"
    reply = _exchange(ctx, init, "json", not_json, 60)
    ctx.require_match(
        reply,
        {"success": True, "result": {"status": "ok"}},
        "the answer to the init ping sent as the first frame (it must not be dropped)",
    )
    _ping_in(ctx, "json")
