"""§7 Enhanced commands: call, safety, store, pipeline, inspect, ping, serialisation.

Profile ``enhanced`` only.  Every case works in a session of its own
(``session_id`` ``conformance.<case>``) and clears it at the end, so cases do
not see each other's objects on the shared bridge.

Spec decisions:

* §7.2 safety: one case per probe, each ``required``: the answer MUST be
  ``success: false`` with ``error_type: "forbidden"`` and a non-empty
  ``error`` (whether the error names the rule cannot be checked without
  knowing the bridge's rule names; it is noted).  "None may have any effect"
  is checked where an effect is observable: probes that would create a file
  name a marker path in a fresh temporary directory, which must not exist
  afterwards; ``statistics.sys.exit`` would end the bridge, so it must still
  answer a ping; a refused ``store_as`` must not appear in ``list_stored``.
  Probes that need pandas or numpy are skipped (with the reason) when the
  bridge's ``ping`` does not list the framework in ``frameworks_available``.
* §7.3 the dictionary model: a fixed-seed pseudo-random sequence of 300
  ``store``/``retrieve``/``delete_stored``/``list_stored``/``clear_session``
  requests over three sessions and four ids is checked answer by answer
  against a ``dict[session][id]`` model (the same seed every run, so a
  failure reproduces).  Stored values are plain wire data; ``retrieve`` must
  give them back in the §7.7 shape.  ``list_stored`` is compared as a set
  (§7.3 says nothing about order).  The cap (§7.3 SHOULD) is probed by 1001
  pipelined ``store`` requests in a fresh bridge: a bridge that accepts all
  of them is NON-STRICT, one that refuses earlier than the 1001st must say
  ``store_full``.
* §7.4 "naming the step's index": the error must contain the failing step's
  0-based index as a number (the case fails step 1 of 3, and checks that
  the ``store_as`` of step 2 did not happen).
* §7.7: the container limit is configurable, so only the shape is required:
  ``value`` holds a prefix of the items and ``length`` the full size; the
  reference default of 10 items is ``recommended``.
"""

from __future__ import annotations

import random
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from snakepit_harness.protocol import ENHANCED_COMMANDS

from ..drivers.stdio import StdioCaseContext
from ..model import BridgeUse
from ..probes import expect_alive
from ._transport import STDIO_CASES

__all__ = ["PROBES", "Probe"]

ENHANCED: Final = frozenset({"enhanced"})
# §7.3 reference cap; the case sends one more store than this.
REFERENCE_CAP: Final = 1000
# §7.7 reference container limit.
REFERENCE_ITEMS: Final = 10
MODEL_SEED: Final = 20_261_128
MODEL_STEPS: Final = 300
MARKER: Final = "{marker}"  # replaced by a path that must not come to exist
# A case that sends hundreds of requests (the dictionary model's steps, the
# cap's 1001 stores) gets this long on a slow machine.
MANY_REQUESTS_TIMEOUT: Final = 60.0

# Every case here applies to the enhanced profile alone.
_case: Final = STDIO_CASES.for_profiles(ENHANCED)
_many_requests_case: Final = _case.preset(timeout=MANY_REQUESTS_TIMEOUT)


# -- helpers ------------------------------------------------------------------


def _send(ctx: StdioCaseContext, command: str, args: dict[str, Any]) -> Any:
    return ctx.request({"id": ctx.next_id(), "command": command, "args": args})


def _ok(ctx: StdioCaseContext, command: str, args: dict[str, Any]) -> dict[str, Any]:
    """The result of a request that MUST succeed."""
    reply = _send(ctx, command, args)
    ctx.require_match(reply, {"success": True, "result": {"status": "ok"}}, f"{command} answer")
    result: dict[str, Any] = reply["result"]
    return result


def _failure(ctx: StdioCaseContext, command: str, args: dict[str, Any]) -> dict[str, Any]:
    """The answer to a request that MUST fail (success false, non-empty error)."""
    reply = _send(ctx, command, args)
    ctx.require_match(
        reply,
        {"success": False, "error": {"$type": "string", "$nonEmpty": True}},
        f"{command} answer",
    )
    failed: dict[str, Any] = reply
    return failed


def _session(ctx: StdioCaseContext) -> str:
    return f"conformance.{ctx.case.id}"


@contextmanager
def _scratch(ctx: StdioCaseContext) -> Iterator[str]:
    """A session for the case, cleared afterwards (also when the case fails)."""
    session = _session(ctx)
    try:
        yield session
    finally:
        try:
            _send(ctx, "clear_session", {"session_id": session})
        except Exception:  # the case's own verdict matters more than the clean-up
            ctx.note("could not clear the case's session afterwards")


def _frameworks(ctx: StdioCaseContext) -> list[str]:
    ping = _ok(ctx, "ping", {})
    found = ping.get("frameworks_available")
    return [str(name) for name in found] if isinstance(found, list) else []


def _need(ctx: StdioCaseContext, framework: str | None) -> None:
    if framework and framework not in _frameworks(ctx):
        ctx.skip(f"the bridge does not report {framework} in frameworks_available")


def _fill(value: Any, marker: str) -> Any:
    if isinstance(value, str):
        return value.replace(MARKER, marker)
    if isinstance(value, list):
        return [_fill(v, marker) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, marker) for k, v in value.items()}
    return value


def _plain_shape(value: Any) -> dict[str, Any]:
    """The §7.7 shape of a plain wire value, as a matcher (prefix of containers)."""
    if isinstance(value, list):
        return {"type": "list", "length": len(value)}
    if isinstance(value, dict):
        return {"type": "dict", "length": len(value)}
    if value is None:
        return {"type": "NoneType", "value": None}
    return {"type": type(value).__name__, "value": {"$eq": value}}


# -- §7.1 call ------------------------------------------------------------------


@_case("enhanced.call.function", section="7.1", level="required")
def call_function(ctx: StdioCaseContext) -> None:
    """call imports the module, walks to the attribute and calls it with args; the answer has
    status ok, the serialised result, stored_as and target.
    """
    result = _ok(ctx, "call", {"target": "math.sqrt", "args": [16]})
    ctx.require_match(
        result,
        {"result": {"type": "float", "value": 4.0}, "target": "math.sqrt", "stored_as": None},
    )


@_case("enhanced.call.kwargs", section="7.1", level="required")
def call_kwargs(ctx: StdioCaseContext) -> None:
    """call passes kwargs as keyword arguments."""
    result = _ok(
        ctx,
        "call",
        {"target": "json.dumps", "args": [{"b": 1, "a": 2}], "kwargs": {"sort_keys": True}},
    )
    ctx.require_match(result["result"], {"type": "str", "value": '{"a": 2, "b": 1}'})


@_case("enhanced.call.attribute", section="7.1", level="required")
def call_attribute(ctx: StdioCaseContext) -> None:
    """call returns a non-callable attribute instead of calling it."""
    result = _ok(ctx, "call", {"target": "math.pi"})
    ctx.require_match(result["result"], {"type": "float", "value": 3.141592653589793})


@_case("enhanced.call.store-as-and-references", section="7.1", level="required")
def call_store_as(ctx: StdioCaseContext) -> None:
    """call with store_as keeps the result; stored.ID targets walk from it and "stored.ID"
    strings inside args stand for it.
    """
    with _scratch(ctx) as session:
        made = _ok(
            ctx,
            "call",
            {
                "target": "fractions.Fraction",
                "args": [3, 4],
                "store_as": "f",
                "session_id": session,
            },
        )
        ctx.require_match(made, {"stored_as": "f", "result": {"type": "Fraction"}})
        walked = _ok(
            ctx,
            "call",
            {"target": "stored.f.limit_denominator", "args": [2], "session_id": session},
        )
        ctx.require_match(walked["result"], {"type": "Fraction", "string_repr": {"$contains": "1"}})
        numerator = _ok(ctx, "call", {"target": "stored.f.numerator", "session_id": session})
        ctx.require_match(numerator["result"], {"type": "int", "value": 3})
        referenced = _ok(
            ctx,
            "call",
            {"target": "json.dumps", "args": [["stored.f.numerator", "x"]], "session_id": session},
        )
        ctx.require_match(referenced["result"], {"type": "str", "value": '[3, "x"]'})


@_case("enhanced.call.missing-reference", section="7.3", level="required")
def call_missing(ctx: StdioCaseContext) -> None:
    """A stored. target naming an id the session does not hold is not_found."""
    with _scratch(ctx) as session:
        reply = _failure(ctx, "call", {"target": "stored.nothing.upper", "session_id": session})
        ctx.require(
            reply.get("error_type") == "not_found", f"error_type: {reply.get('error_type')!r}"
        )


# -- §7.2 safety probes -----------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    slug: str
    command: str
    args: dict[str, Any]
    needs: str | None = None  # a framework the probe needs (skipped without it)
    setup: tuple[tuple[str, dict[str, Any]], ...] = field(default=())

    @property
    def requirement(self) -> str:
        """What the probe's case grades (its function's docstring)."""
        target = str(self.args.get("target") or "pipeline")
        return (
            f"The {self.command} probe {target!r} is refused with error_type forbidden "
            "and has no effect."
        )


_STORE_TEXT = ("store", {"id": "X", "value": "hello"})
_STORE_LIST = ("store", {"id": "L", "value": [1, 2]})
_MAKE_FRAME = (
    "call",
    {"target": "pandas.DataFrame", "kwargs": {"data": {"a": [1, 2]}}, "store_as": "df"},
)
_MAKE_ARRAY = ("call", {"target": "numpy.ones", "args": [4], "store_as": "arr"})


def _c(target: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"target": target, "args": list(args), "kwargs": kwargs, "store_as": "leak"}


PROBES: Final = (
    Probe("os-system", "call", _c("os.system", f"touch {MARKER}")),
    Probe("subprocess-run", "call", _c("subprocess.run", ["touch", MARKER])),
    Probe("builtins-eval", "call", _c("builtins.eval", f"open('{MARKER}', 'w')")),
    Probe("builtins-exec", "call", _c("builtins.exec", f"open('{MARKER}', 'w')")),
    Probe("builtins-open", "call", _c("builtins.open", MARKER, "w")),
    Probe("importlib-import-module", "call", _c("importlib.import_module", "os")),
    Probe("math-loader", "call", _c("math.__loader__")),
    Probe("statistics-sys-exit", "call", _c("statistics.sys.exit", 3)),
    Probe("json-decoder-re-compile", "call", _c("json.decoder.re.compile", "x")),
    Probe("fractions-operator-attrgetter", "call", _c("fractions.operator.attrgetter", "x")),
    Probe("json-codecs-open", "call", _c("json.codecs.open", MARKER, "w")),
    Probe("stored-class", "call", _c("stored.X.__class__"), setup=(_STORE_TEXT,)),
    Probe(
        "stored-subclasses",
        "call",
        _c("stored.X.__class__.__base__.__subclasses__"),
        setup=(_STORE_TEXT,),
    ),
    Probe(
        "stored-format-walk", "call", _c("stored.X.format", "{0.__class__}"), setup=(_STORE_TEXT,)
    ),
    Probe("pandas-eval", "call", _c("pandas.eval", "1 + 1"), needs="pandas"),
    Probe("pandas-read-pickle", "call", _c("pandas.read_pickle", MARKER), needs="pandas"),
    Probe("dataframe-query", "call", _c("stored.df.query", "a > 0"), "pandas", (_MAKE_FRAME,)),
    Probe(
        "dataframe-to-pickle", "call", _c("stored.df.to_pickle", MARKER), "pandas", (_MAKE_FRAME,)
    ),
    Probe("numpy-load", "call", _c("numpy.load", MARKER, allow_pickle=True), needs="numpy"),
    Probe("numpy-save", "call", _c("numpy.save", MARKER, [1]), needs="numpy"),
    Probe("inspect-os-system", "inspect", {"target": "os.system"}),
    Probe(
        "inspect-stored-class", "inspect", {"target": "stored.X.__class__"}, setup=(_STORE_TEXT,)
    ),
    Probe("inspect-statistics-sys", "inspect", {"target": "statistics.sys"}),
    Probe(
        "pipeline-step",
        "pipeline",
        {"steps": [{"target": "math.sqrt", "args": [4]}, _c("os.system", f"touch {MARKER}")]},
    ),
    Probe(
        "pipeline-stored-walk",
        "pipeline",
        {
            "steps": [
                {"target": "math.sqrt", "args": [4], "store_as": "r"},
                _c("stored.r.__class__"),
            ]
        },
    ),
    Probe(
        "reference-dunder", "call", _c("json.dumps", ["stored.X.__class__"]), setup=(_STORE_TEXT,)
    ),
    Probe(
        "reference-format-hook",
        "call",
        _c("json.loads", "{}", object_hook="stored.X.format"),
        setup=(_STORE_TEXT,),
    ),
    Probe(
        "reference-writer",
        "call",
        _c("stored.L.append", "stored.df.to_csv"),
        "pandas",
        (_STORE_LIST, _MAKE_FRAME),
    ),
    Probe(
        "reference-array-file",
        "call",
        _c("json.dumps", "stored.arr.tofile"),
        "numpy",
        (_MAKE_ARRAY,),
    ),
)


def _probe_case(probe: Probe) -> Callable[[StdioCaseContext], None]:
    def run(ctx: StdioCaseContext) -> None:
        _need(ctx, probe.needs)
        folder = Path(tempfile.mkdtemp(prefix="snakepit-probe-"))
        marker = folder / "marker"
        try:
            with _scratch(ctx) as session:
                for command, args in probe.setup:
                    _ok(ctx, command, {**args, "session_id": session})
                request = {**_fill(probe.args, str(marker)), "session_id": session}
                reply = _failure(ctx, probe.command, request)
                ctx.require(
                    reply.get("error_type") == "forbidden",
                    f"the probe must be refused with error_type 'forbidden', got "
                    f"{reply.get('error_type')!r}: {str(reply.get('error'))[:200]}",
                )
                ctx.note(f"refusal: {str(reply.get('error'))[:200]}")
                expect_alive(ctx, "after a refused probe")
                ctx.require(not marker.exists(), f"the probe had an effect: {marker} was created")
                listed = _ok(ctx, "list_stored", {"session_id": session})
                ctx.require(
                    "leak" not in (listed.get("stored_objects") or []),
                    "a refused call stored its result (store_as 'leak')",
                )
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    run.__doc__ = probe.requirement
    return run


for _probe in PROBES:
    _case(f"enhanced.safety.{_probe.slug}", section="7.2", level="required")(_probe_case(_probe))


# -- §7.3 store -------------------------------------------------------------------


@_case("enhanced.store.round-trip", section="7.3", level="required")
def store_round_trip(ctx: StdioCaseContext) -> None:
    """store, retrieve (object in the §7.7 shape), list_stored (ids and count) and delete_stored
    behave like a dictionary.
    """
    with _scratch(ctx) as session:
        _ok(ctx, "store", {"id": "k", "value": {"n": 1}, "session_id": session})
        got = _ok(ctx, "retrieve", {"id": "k", "session_id": session})
        ctx.require_match(
            got["object"],
            {"type": "dict", "value": {"n": {"type": "int", "value": 1}}, "length": 1},
            "retrieved object",
        )
        listed = _ok(ctx, "list_stored", {"session_id": session})
        ctx.require_match(listed, {"stored_objects": ["k"], "count": 1})
        _ok(ctx, "delete_stored", {"id": "k", "session_id": session})
        listed = _ok(ctx, "list_stored", {"session_id": session})
        ctx.require_match(listed, {"stored_objects": [], "count": 0})


@_case("enhanced.store.not-found", section="7.3", level="required")
def store_not_found(ctx: StdioCaseContext) -> None:
    """retrieve and delete_stored of a missing id answer error_type not_found."""
    with _scratch(ctx) as session:
        for command in ("retrieve", "delete_stored"):
            reply = _failure(ctx, command, {"id": "missing", "session_id": session})
            ctx.require(
                reply.get("error_type") == "not_found",
                f"{command} of a missing id: error_type {reply.get('error_type')!r}",
            )


@_case("enhanced.store.sessions", section="7.3", level="recommended")
def store_sessions(ctx: StdioCaseContext) -> None:
    """Ids are per session, and clear_session clears only its own session."""
    base = _session(ctx)
    one, two = f"{base}.1", f"{base}.2"
    try:
        _ok(ctx, "store", {"id": "k", "value": 1, "session_id": one})
        _ok(ctx, "store", {"id": "k", "value": 2, "session_id": two})
        got = _ok(ctx, "retrieve", {"id": "k", "session_id": two})
        ctx.recommend_match(got["object"], {"type": "int", "value": 2}, "the other session's k")
        _ok(ctx, "clear_session", {"session_id": one})
        cleared = _send(ctx, "retrieve", {"id": "k", "session_id": one})
        ctx.require_match(cleared, {"success": False}, "k after clear_session of its session")
        kept = _send(ctx, "retrieve", {"id": "k", "session_id": two})
        ctx.recommend_match(
            kept, {"success": True, "result": {"object": {"value": 2}}}, "k of another session"
        )
    finally:
        for session in (one, two):
            _send(ctx, "clear_session", {"session_id": session})


@_many_requests_case("enhanced.store.dictionary-model", section="7.3", level="required")
def store_model(ctx: StdioCaseContext) -> None:
    """Under a pseudo-random sequence of store commands over several sessions, every answer
    agrees with a per-session dictionary.
    """
    base = _session(ctx)
    sessions = (f"{base}.a", f"{base}.b", f"{base}.c")
    ids = ("x", "y", "z", "w")
    values: tuple[Any, ...] = (None, True, 7, -2.5, "text", [1, "a"], {"k": [None]})
    rng = random.Random(MODEL_SEED)
    model: dict[str, dict[str, Any]] = {s: {} for s in sessions}
    for session in sessions:
        _send(ctx, "clear_session", {"session_id": session})
    try:
        for step in range(MODEL_STEPS):
            op = rng.choice(
                ("store", "store", "retrieve", "delete_stored", "list_stored", "clear_session")
            )
            session, key, value = rng.choice(sessions), rng.choice(ids), rng.choice(values)
            where = f"step {step} ({op} {key!r} in {session!r}, seed {MODEL_SEED})"
            space = model[session]
            if op == "store":
                _ok(ctx, "store", {"id": key, "value": value, "session_id": session})
                space[key] = value
            elif op == "retrieve":
                reply = _send(ctx, "retrieve", {"id": key, "session_id": session})
                if key in space:
                    ctx.require_match(
                        reply,
                        {"success": True, "result": {"object": _plain_shape(space[key])}},
                        where,
                    )
                else:
                    ctx.require_match(reply, {"success": False, "error_type": "not_found"}, where)
            elif op == "delete_stored":
                reply = _send(ctx, "delete_stored", {"id": key, "session_id": session})
                expected = (
                    {"success": True}
                    if key in space
                    else {"success": False, "error_type": "not_found"}
                )
                ctx.require_match(reply, expected, where)
                space.pop(key, None)
            elif op == "list_stored":
                listed = _ok(ctx, "list_stored", {"session_id": session})
                got = listed.get("stored_objects")
                ctx.require(
                    isinstance(got, list)
                    and sorted(map(str, got)) == sorted(space)
                    and listed.get("count") == len(space),
                    f"{where}: list_stored gave {got!r} (count {listed.get('count')!r}); "
                    f"the model holds {sorted(space)}",
                )
            else:
                _ok(ctx, "clear_session", {"session_id": session})
                space.clear()
    finally:
        for session in sessions:
            _send(ctx, "clear_session", {"session_id": session})


@_many_requests_case(
    "enhanced.store.cap", section="7.3", level="recommended", bridge=BridgeUse.FRESH
)
def store_cap(ctx: StdioCaseContext) -> None:
    """A session's store is capped (reference: 1000 objects); past the cap, store answers
    error_type store_full.
    """
    session = _session(ctx)
    first = ctx.next_id()
    count = REFERENCE_CAP + 1
    for i in range(count):  # pipelined (§4.7): all sent, then all read
        ctx.send_value(
            {
                "id": first + i,
                "command": "store",
                "args": {"id": f"k{i}", "value": i, "session_id": session},
            }
        )
    refused_at = None
    for i in range(count):
        reply = ctx.read_value()
        if isinstance(reply, dict) and reply.get("success") is False and refused_at is None:
            refused_at = i
            ctx.require(
                reply.get("error_type") == "store_full",
                f"store {i} refused with {reply.get('error_type')!r}, not store_full",
            )
    ctx.recommend(
        refused_at is not None, f"all {count} stores in one session were accepted: no cap"
    )
    if refused_at is not None:
        ctx.note(f"the cap is {refused_at} objects per session")
        ctx.recommend(
            refused_at == REFERENCE_CAP, f"cap {refused_at}, the reference is {REFERENCE_CAP}"
        )


# -- §7.4 pipeline ------------------------------------------------------------------


@_case("enhanced.pipeline.flow", section="7.4", level="required")
def pipeline_flow(ctx: StdioCaseContext) -> None:
    """pipeline runs its steps in order with store_as and stored.NAME references and answers
    pipeline_results and steps_completed.
    """
    with _scratch(ctx) as session:
        steps = [
            {"target": "fractions.Fraction", "args": [1, 3], "store_as": "third"},
            {
                "target": "statistics.mean",
                "args": [["stored.third", "stored.third"]],
                "store_as": "m",
            },
            {"target": "json.dumps", "args": [["stored.m.numerator", "stored.m.denominator"]]},
        ]
        result = _ok(ctx, "pipeline", {"steps": steps, "session_id": session})
        ctx.require_match(
            result,
            {"steps_completed": 3, "pipeline_results": {"$len": 3}},
        )
        ctx.require_match(
            result["pipeline_results"][2], {"result": {"type": "str", "value": "[1, 3]"}}
        )


@_case("enhanced.pipeline.failure-stops", section="7.4", level="required")
def pipeline_failure(ctx: StdioCaseContext) -> None:
    """A failing step stops the pipeline, which signals failure naming the step's index; later
    steps do not run.
    """
    with _scratch(ctx) as session:
        steps = [
            {"target": "math.sqrt", "args": [4], "store_as": "before"},
            {"target": "stored.absent.upper"},
            {"target": "math.sqrt", "args": [9], "store_as": "after"},
        ]
        reply = _failure(ctx, "pipeline", {"steps": steps, "session_id": session})
        ctx.require(
            re.search(r"(?<![0-9])1(?![0-9])", str(reply.get("error"))) is not None,
            f"the error must name the failing step's index 1: {reply.get('error')!r}",
        )
        after = _send(ctx, "retrieve", {"id": "after", "session_id": session})
        ctx.require_match(after, {"success": False}, "the step after the failure must not have run")


# -- §7.5 inspect, §7.6 ping ---------------------------------------------------------


@_case("enhanced.inspect.function", section="7.5", level="required")
def inspect_function(ctx: StdioCaseContext) -> None:
    """inspect answers inspection with type, module and callable (and, where available,
    docstring and signature).
    """
    result = _ok(ctx, "inspect", {"target": "math.sqrt"})
    ctx.require_match(
        result,
        {"inspection": {"type": {"$type": "string"}, "module": "math", "callable": True}},
    )
    ctx.recommend_match(
        result["inspection"], {"docstring": {"$type": "string"}}, "inspection of math.sqrt"
    )


@_case("enhanced.ping.fields", section="7.6", level="required")
def ping_fields(ctx: StdioCaseContext) -> None:
    """ping also reports frameworks_available (a list) and stored_objects (a count)."""
    with _scratch(ctx) as session:
        before = _ok(ctx, "ping", {})
        ctx.require_match(
            before,
            {
                "frameworks_available": {"$type": "array"},
                "stored_objects": {"$type": "integer", "$ge": 0},
            },
        )
        _ok(ctx, "store", {"id": "counted", "value": 1, "session_id": session})
        after = _ok(ctx, "ping", {})
        ctx.require(
            after.get("stored_objects") == before["stored_objects"] + 1,
            f"stored_objects went from {before['stored_objects']} to "
            f"{after.get('stored_objects')!r} after one store",
        )


@_case("enhanced.info.commands", section="6.4", level="required")
def info_commands(ctx: StdioCaseContext) -> None:
    """info's supported_commands lists every §7 command besides the §6 ones."""
    result = _ok(ctx, "info", {})
    listed = result.get("bridge_info", {}).get("supported_commands")
    missing = [
        c
        for c in (*ENHANCED_COMMANDS, "ping", "echo", "compute", "info")
        if c not in (listed or [])
    ]
    ctx.require(not missing, f"supported_commands lacks {missing}: {listed!r}")


# -- §7.7 serialisation --------------------------------------------------------------


@_case("enhanced.serialize.scalars", section="7.7", level="required")
def serialize_scalars(ctx: StdioCaseContext) -> None:
    """None, bool, int, float and str results are {type, value}, type being the Python type name."""
    result = _ok(ctx, "call", {"target": "json.loads", "args": ['[null, true, 3, 2.5, "s"]']})
    ctx.require_match(
        result["result"],
        {
            "type": "list",
            "length": 5,
            "value": [
                {"type": "NoneType", "value": None},
                {"type": "bool", "value": True},
                {"type": "int", "value": 3},
                {"type": "float", "value": 2.5},
                {"type": "str", "value": "s"},
            ],
        },
    )


@_case("enhanced.serialize.containers", section="7.7", level="required")
def serialize_containers(ctx: StdioCaseContext) -> None:
    """list, tuple and dict results are {type, value, length}; value holds the first items, each
    serialised.
    """
    long_list = list(range(25))
    got = _ok(ctx, "call", {"target": "json.loads", "args": [str(long_list)]})["result"]
    ctx.require_match(got, {"type": "list", "length": 25, "value": {"$type": "array"}})
    shown = got["value"]
    ctx.require(
        shown == [{"type": "int", "value": i} for i in range(len(shown))] and len(shown) <= 25,
        f"value must be a prefix of the items: {shown!r}"[:300],
    )
    ctx.recommend(
        len(shown) == REFERENCE_ITEMS, f"{len(shown)} items shown; the reference shows 10"
    )
    mapping = _ok(ctx, "call", {"target": "json.loads", "args": ['{"a": [1]}']})["result"]
    ctx.require_match(
        mapping,
        {
            "type": "dict",
            "length": 1,
            "value": {"a": {"type": "list", "length": 1, "value": [{"type": "int", "value": 1}]}},
        },
    )


@_case("enhanced.serialize.object", section="7.7", level="required")
def serialize_object(ctx: StdioCaseContext) -> None:
    """Other objects are {type, module, attributes, string_repr}."""
    got = _ok(ctx, "call", {"target": "fractions.Fraction", "args": [1, 3]})["result"]
    ctx.require_match(
        got,
        {
            "type": "Fraction",
            "module": "fractions",
            "attributes": {"$type": "object"},
            "string_repr": {"$type": "string", "$contains": "1"},
        },
    )


@_case("enhanced.serialize.dataframe", section="7.7", level="required")
def serialize_dataframe(ctx: StdioCaseContext) -> None:
    """A pandas DataFrame is {type, shape, columns, dtypes, head, string_repr}."""
    _need(ctx, "pandas")
    data = {"x": [1, 2, 3], "y": ["a", "b", "c"]}
    got = _ok(ctx, "call", {"target": "pandas.DataFrame", "kwargs": {"data": data}})["result"]
    ctx.require_match(
        got,
        {
            "type": "DataFrame",
            "shape": [3, 2],
            "columns": ["x", "y"],
            "dtypes": {"x": {"$type": "string"}, "y": {"$type": "string"}},
            "head": {"$type": "array", "$nonEmpty": True},
            "string_repr": {"$type": "string"},
        },
    )


@_case("enhanced.serialize.unencodable", section="7.7", level="required", codecs=("json",))
def serialize_unencodable(ctx: StdioCaseContext) -> None:
    """A result that cannot be carried (an infinite float under JSON) answers
    serialization_error, and the bridge keeps serving.
    """
    reply = _failure(ctx, "call", {"target": "math.inf"})
    ctx.require(
        reply.get("error_type") == "serialization_error",
        f"error_type {reply.get('error_type')!r}",
    )
    expect_alive(ctx, "after an unencodable result")
