"""What a correct bridge answers: exact value comparison, Python arithmetic, response checks.

Pure functions, no I/O.  Every check returns a list of problems (empty when the
answer is right), each naming the spec section it rests on, so a fuzz failure
reads as a conformance verdict.

Equality is *exact*, since ``echo`` must return "exactly what it was given"
(§6.2): ``True`` is not ``1``, ``-0.0`` is not ``0.0``, ``b"a"`` is not ``"a"``,
and NaN (MessagePack only) equals NaN.  One allowance: JSON has a single number
type, so under JSON an integral float and the equal integer are the same value
(``2.0`` may come back as ``2``), while the sign of zero and every digit of a big
integer still count (Python compares ``int`` and ``float`` exactly, so
2^53 + 1 never equals 9007199254740992.0).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, Final

from ..protocol import response_problems
from .strategies import Expectation, Step

__all__ = [
    "check_malformed_response",
    "check_response",
    "expected_compute",
    "match_responses",
    "normalise",
    "same_value",
]

_MSGPACK_INT_MIN: Final = -(2**63)
_MSGPACK_INT_MAX: Final = 2**64 - 1

_ARITHMETIC: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": operator.truediv,
}

# Fields whose values change from one identical request to the next (§4.2
# timestamp; §6.1 uptime and counters; §7.6 store count): left out when the
# same frames written two ways are compared.
VOLATILE_KEYS: Final = frozenset(
    {"timestamp", "uptime", "requests_handled", "stored_objects", "traceback", "system_info"}
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same_float(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def _negative_zero(value: Any) -> bool:
    return isinstance(value, float) and value == 0 and math.copysign(1.0, value) < 0


def _same_number(expected: int | float, got: int | float, codec: str) -> bool:
    if type(expected) is not type(got) and codec != "json":
        return False  # MessagePack has distinct int and float types
    if isinstance(expected, float) and isinstance(got, float):
        return _same_float(expected, got)
    # Exact comparison (Python's int/float equality is exact); zero keeps its sign.
    return expected == got and _negative_zero(expected) == _negative_zero(got)


def same_value(expected: Any, got: Any, codec: str, path: str = "$") -> str | None:
    """Where ``got`` first differs from ``expected`` (None when they are the same value)."""
    if _is_number(expected) and _is_number(got):
        if _same_number(expected, got, codec):
            return None
        return f"{path}: expected {type(expected).__name__} {expected!r}, got {got!r}"
    if type(expected) is not type(got):
        return f"{path}: expected {type(expected).__name__} {expected!r}, got {got!r}"
    if isinstance(expected, list):
        if len(expected) != len(got):
            return f"{path}: expected {len(expected)} items, got {len(got)}"
        for index, (e, g) in enumerate(zip(expected, got, strict=True)):
            problem = same_value(e, g, codec, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(expected, dict):
        if set(expected) != set(got):
            missing = sorted(map(repr, set(expected) - set(got)))
            extra = sorted(map(repr, set(got) - set(expected)))
            return f"{path}: keys differ (missing {missing}, unexpected {extra})"
        for key in expected:
            problem = same_value(expected[key], got[key], codec, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    return None if expected == got else f"{path}: expected {expected!r}, got {got!r}"


def expected_compute(operation: str, a: Any, b: Any, codec: str) -> tuple[bool, Any]:
    """(True, result) when ``compute`` must succeed, (False, reason) when it must fail (§6.3)."""
    function = _ARITHMETIC.get(operation)
    if function is None:
        return False, f"unknown operation {operation!r}"
    if not (_is_number(a) and _is_number(b)):
        return False, "a non-numeric operand"
    try:
        result = function(a, b)
    except ZeroDivisionError:
        return False, "division by zero"
    except OverflowError:
        return False, "a result too large for a float"
    if isinstance(result, float) and not math.isfinite(result) and codec == "json":
        return False, "a non-finite result, which JSON cannot carry (§4.6)"
    if (
        isinstance(result, int)
        and codec == "msgpack"
        and not (_MSGPACK_INT_MIN <= result <= _MSGPACK_INT_MAX)
    ):
        return False, "an integer result outside MessagePack's 64-bit range (§4.6)"
    return True, result


def _signals_failure(response: dict[str, Any]) -> bool:
    if response.get("success") is False:
        return True
    # §4.4's older form, accepted as non-strict.
    result = response.get("result")
    return isinstance(result, dict) and result.get("status") == "error"


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 20] + f"... ({len(text)} chars)"


def python_type_name(value: Any) -> str:
    """The Python type name §7.7 puts in ``type`` (``NoneType``, ``int``, ``dict``...)."""
    return type(value).__name__


def _check_stored(value: Any, response: dict[str, Any], codec: str) -> list[str]:
    """§7.3, §7.7: ``retrieve`` answers ``object``: ``{type, value[, length]}``."""
    if response.get("success") is not True:
        return [f"retrieve of a stored id must succeed (§7.3), got {_short(response)}"]
    result = response["result"]
    shown = result.get("object") if isinstance(result, dict) else None
    if not isinstance(shown, dict):
        return [f"retrieve must answer `object` (§7.3), got {_short(result)}"]
    if shown.get("type") != python_type_name(value):
        return [
            f"retrieved object has type {shown.get('type')!r}, stored a "
            f"{python_type_name(value)} (§7.7): {_short(shown)}"
        ]
    if isinstance(value, list | dict):
        if shown.get("length") != len(value):
            return [
                f"retrieved {type(value).__name__} has length {shown.get('length')!r}, "
                f"stored {len(value)} items (§7.7)"
            ]
        return []
    mismatch = same_value(value, shown.get("value"), codec, "object.value")
    return [f"retrieve did not give back what was stored (§7.3): {mismatch}"] if mismatch else []


def _check_listing(ids: list[str], response: dict[str, Any], codec: str) -> list[str]:
    if response.get("success") is not True:
        return [f"list_stored must succeed (§7.3), got {_short(response)}"]
    result = response["result"]
    listed = result.get("stored_objects") if isinstance(result, dict) else None
    if not isinstance(listed, list) or sorted(map(str, listed)) != sorted(ids):
        return [f"list_stored lists {listed!r}, the session holds {ids!r} (§7.3)"]
    if result.get("count") != len(ids):
        return [f"list_stored counts {result.get('count')!r}, the session holds {len(ids)} (§7.3)"]
    return []


def _check_ok_status(response: dict[str, Any]) -> list[str]:
    if response.get("success") is not True:
        return [f"expected success, got the failure {response.get('error')!r} (§6)"]
    result = response["result"]
    if not isinstance(result, dict) or result.get("status") != "ok":
        return [f'`result.status` is not "ok": {result!r} (§6)']
    return []


def _check_expectation(
    expect: Expectation, request: dict[str, Any], response: dict[str, Any], codec: str
) -> list[str]:
    if expect.kind == "envelope":
        return []
    if expect.kind == "failure":
        if _signals_failure(response):
            return []
        return [f"{request['command']!r} must signal failure (§4.4), but succeeded"]
    if expect.kind == "not_found":
        if response.get("success") is False and response.get("error_type") == "not_found":
            return []
        return [
            f"{request['command']!r} of a missing id must fail with error_type not_found "
            f"(§7.3), got {_short(response)}"
        ]
    if expect.kind == "success":
        if response.get("success") is True:
            return []
        return [f"{request['command']!r} must succeed (§7.3), got {_short(response)}"]
    if expect.kind == "stored":
        return _check_stored(expect.value, response, codec)
    if expect.kind == "listing":
        return _check_listing(expect.value, response, codec)
    if expect.kind == "compute":
        operation, a, b = expect.value
        must_succeed, want = expected_compute(operation, a, b, codec)
        if not must_succeed:
            if _signals_failure(response):
                return []
            return [f"compute with {want} must fail (§6.3), got {response.get('result')!r}"]
        problems = _check_ok_status(response)
        if problems:
            return problems
        result = response["result"]
        mismatch = same_value(want, result.get("result"), codec, "result.result")
        if mismatch:
            return [f"compute {operation}({a!r}, {b!r}) disagrees with Python (§6.3): {mismatch}"]
        inputs = same_value({"a": a, "b": b}, result.get("inputs"), codec, "result.inputs")
        return [f"compute must report its inputs (§6.3): {inputs}"] if inputs else []
    problems = _check_ok_status(response)
    if problems:
        return problems
    result = response["result"]
    if expect.kind == "echo":
        if "echoed" not in result:
            return ["echo's result has no `echoed` (§6.2)"]
        mismatch = same_value(expect.value, result["echoed"], codec, "echoed")
        return [f"echo did not return what it was given (§6.2): {mismatch}"] if mismatch else []
    if request["command"] == "ping" and "worker_id" in request["args"]:
        want_id = request["args"]["worker_id"]
        mismatch = same_value(want_id, result.get("worker_id"), codec, "result.worker_id")
        if mismatch:
            return [f"ping must report the worker_id it was given (§6.1): {mismatch}"]
    return []


def check_response(step: Step, response: Any, codec: str) -> list[str]:
    """Problems with ``response`` as the answer to the valid request in ``step``."""
    assert step.request is not None and step.expect is not None
    problems = response_problems(response, step.request_id)
    if problems:
        return problems
    return _check_expectation(step.expect, step.request, response, codec)


def check_malformed_response(step: Step, response: Any) -> list[str]:
    """Problems with ``response`` as the answer to a malformed frame (§4.3)."""
    if not isinstance(response, dict):
        return response_problems(response, None)
    answered_id = response.get("id")
    return response_problems(response, step.loose_id if answered_id is not None else None)


def _response_id(response: Any) -> Any:
    return response.get("id", ...) if isinstance(response, dict) else ...


def _same_id(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def match_responses(steps: Sequence[Step], responses: Sequence[Any], codec: str) -> list[str]:
    """Attribute responses to the frames sent, in order (§4.3, §4.7).

    Every valid request must get exactly one response carrying its id, in the
    order sent; a malformed frame gets at most one (its id null or, when it
    could be read, the frame's own), before the next valid request's.
    """
    problems: list[str] = []
    position = 0
    for index, step in enumerate(steps):
        where = f"frame {index} ({step.label})"
        if step.request is None:
            if position < len(responses):
                candidate = _response_id(responses[position])
                if candidate is None or (
                    step.loose_id is not None and _same_id(candidate, step.loose_id)
                ):
                    problems += [
                        f"{where}: {p}" for p in check_malformed_response(step, responses[position])
                    ]
                    position += 1
            continue
        if position >= len(responses):
            problems.append(f"{where}: no response with id {step.request_id!r} (§4.7)")
            return problems
        response = responses[position]
        position += 1
        got_id = _response_id(response)
        if not _same_id(got_id, step.request_id):
            shown = "no id" if got_id is ... else f"id {got_id!r}"
            problems.append(
                f"{where}: expected the response to id {step.request_id!r} next, "
                f"got one with {shown} (exactly one response per request, in order, §4.7)"
            )
            return problems
        problems += [f"{where}: {p}" for p in check_response(step, response, codec)]
    if position < len(responses):
        problems.append(
            f"{len(responses) - position} response(s) more than the frames sent can explain "
            f"(first: {responses[position]!r}) (§4.7)"
        )
    return problems


def normalise(response: Any) -> Any:
    """``response`` without the fields that legitimately change between runs."""
    if isinstance(response, dict):
        return {k: normalise(v) for k, v in response.items() if k not in VOLATILE_KEYS}
    if isinstance(response, list):
        return [normalise(v) for v in response]
    return response
