"""Response matchers: a small JSON-expressible language for expected values.

Golden-frame files (fixtures/golden/FORMAT.md) and Python cases describe an
expected response with the same matcher, so it can be reviewed, and read from
any language.  A matcher is a JSON value:

* a scalar: equal to it (``true`` never equals ``1``; ``1`` equals ``1.0``);
* a list: a list of the same length, item by item;
* an object without ``$`` keys: an object holding at least those keys, each
  matching (extra keys are allowed: responses carry ``timestamp`` and more);
* an object whose keys all start with ``$``: every operator must hold:
  ``$eq`` (deep equality, no extra keys anywhere), ``$type`` (a name or a list
  of names: string, integer, number, boolean, null, object, array, bytes,
  any), ``$regex`` (``re.search`` on a string), ``$format`` (a named pattern:
  ``iso8601``), ``$ge``/``$gt``/``$le``/``$lt`` (numbers), ``$absent`` (the key
  is missing), ``$oneOf`` (a list of matchers, one must hold), ``$not`` (a
  matcher that must not hold), ``$contains`` (a substring of a string, or the
  items a list must include), ``$nonEmpty`` (a non-empty string, list or object),
  ``$len`` (exact length), ``$keys`` (the object's exact key set).

Values that plain JSON cannot carry portably are written as one-key objects,
both in requests and in matchers: ``{"$bytes": "hex"}`` (MessagePack ``bin``),
``{"$int": "decimal"}`` (integers beyond ±(2^53-1), which JavaScript readers
would round) and ``{"$float": "inf" | "-inf" | "nan"}``.  :func:`decode_special`
turns them into Python values.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "FORMATS",
    "MatcherError",
    "decode_special",
    "describe",
    "encode_special",
    "match",
]

from snakepit_harness.errors import LocalProtocolError


class MatcherError(LocalProtocolError):
    """A matcher (in a golden file or a case) is itself malformed."""


# Named patterns for ``$format``.  ISO 8601 with a UTC offset or ``Z``
# (§4.2 SHOULD): date, "T" or space, time, optional fraction, zone.
FORMATS: Final[dict[str, re.Pattern[str]]] = {
    "iso8601": re.compile(
        r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}([.,]\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)$"
    ),
}

# Keys that mark a special value rather than an operator.
_SPECIALS: Final = ("$bytes", "$int", "$float")
_FLOATS: Final = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def decode_special(value: Any) -> Any:
    """Replace ``{"$bytes"|"$int"|"$float": ...}`` by Python values, recursively."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key == "$bytes":
                return bytes.fromhex(str(inner))
            if key == "$int":
                return int(str(inner))
            if key == "$float":
                try:
                    return _FLOATS[str(inner)]
                except KeyError:
                    raise MatcherError(f"$float must be inf, -inf or nan, not {inner!r}") from None
        return {k: decode_special(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_special(v) for v in value]
    return value


# Integers JSON readers in any language keep exactly.
_SAFE_INT: Final = 2**53 - 1


def encode_special(value: Any) -> Any:
    """The inverse of :func:`decode_special`: a Python value as portable JSON."""
    if isinstance(value, bytes | bytearray):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if abs(value) <= _SAFE_INT else {"$int": str(value)}
    if isinstance(value, float):
        if math.isnan(value):
            return {"$float": "nan"}
        if math.isinf(value):
            return {"$float": "inf" if value > 0 else "-inf"}
        return value
    if isinstance(value, dict):
        return {str(k): encode_special(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode_special(v) for v in value]
    return repr(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes | bytearray):
        return "bytes"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _type_ok(value: Any, name: str) -> bool:
    actual = _type_name(value)
    if name == "any":
        return True
    if name == "number":
        return actual in ("integer", "number")
    return actual == name


def _negative_zero(value: Any) -> bool:
    return isinstance(value, float) and value == 0 and math.copysign(1.0, value) < 0


def _equal(a: Any, b: Any) -> bool:
    """Deep equality that keeps bool, number, str and bytes apart."""
    ta, tb = _type_name(a), _type_name(b)
    numeric = ("integer", "number")
    if ta in numeric and tb in numeric:
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        if a == 0 and b == 0 and (_negative_zero(a) or _negative_zero(b)):
            # -0.0 is a value of its own (§6.2 echo "deep-equal"): keep its sign.
            return _negative_zero(a) and _negative_zero(b)
        return bool(a == b)
    if ta != tb:
        return False
    if ta == "object":
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if ta == "array":
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# A bounded repr: a 16 MiB echo must not be rendered whole just to be cut.
_REPR = reprlib.Repr()
_REPR.maxstring = 100
_REPR.maxother = 100
_REPR.maxlong = 60
_REPR.maxlevel = 5
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = 12


def _short(value: Any, limit: int = 120) -> str:
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ..."


Problems = list[str]


def _op_eq(value: Any, arg: Any, path: str, out: Problems) -> None:
    expected = decode_special(arg)
    if not _equal(value, expected):
        out.append(f"{path}: expected exactly {_short(expected)}, got {_short(value)}")


def _op_type(value: Any, arg: Any, path: str, out: Problems) -> None:
    names = arg if isinstance(arg, list) else [arg]
    if not any(_type_ok(value, str(n)) for n in names):
        out.append(f"{path}: expected type {'|'.join(map(str, names))}, got {_type_name(value)}")


def _op_regex(value: Any, arg: Any, path: str, out: Problems) -> None:
    if not isinstance(value, str) or re.search(str(arg), value) is None:
        out.append(f"{path}: expected a string matching /{arg}/, got {_short(value)}")


def _op_format(value: Any, arg: Any, path: str, out: Problems) -> None:
    try:
        pattern = FORMATS[str(arg)]
    except KeyError:
        raise MatcherError(f"unknown $format {arg!r}; known: {', '.join(FORMATS)}") from None
    if not isinstance(value, str) or pattern.match(value) is None:
        out.append(f"{path}: expected a {arg} string, got {_short(value)}")


def _compare(symbol: str, test: Callable[[float, float], bool]) -> Callable[..., None]:
    def op(value: Any, arg: Any, path: str, out: Problems) -> None:
        if _type_name(value) not in ("integer", "number") or not test(value, arg):
            out.append(f"{path}: expected a number {symbol} {arg}, got {_short(value)}")

    return op


def _op_one_of(value: Any, arg: Any, path: str, out: Problems) -> None:
    if not isinstance(arg, list) or not arg:
        raise MatcherError(f"{path}: $oneOf needs a non-empty list")
    attempts = [match(value, m, path) for m in arg]
    if all(attempts):
        best = min(attempts, key=len)
        out.append(f"{path}: matched none of {len(arg)} alternatives; closest: {'; '.join(best)}")


def _op_not(value: Any, arg: Any, path: str, out: Problems) -> None:
    if not match(value, arg, path):
        out.append(f"{path}: must not match {_short(arg)}, got {_short(value)}")


def _op_contains(value: Any, arg: Any, path: str, out: Problems) -> None:
    if isinstance(value, str):
        if not isinstance(arg, str) or arg not in value:
            out.append(f"{path}: expected a string containing {arg!r}, got {_short(value)}")
        return
    if isinstance(value, list):
        wanted = arg if isinstance(arg, list) else [arg]
        missing = [w for w in wanted if not any(_equal(v, decode_special(w)) for v in value)]
        if missing:
            out.append(f"{path}: list lacks {_short(missing)}")
        return
    out.append(f"{path}: expected a string or list containing {arg!r}, got {_short(value)}")


def _op_non_empty(value: Any, arg: Any, path: str, out: Problems) -> None:
    if bool(arg) and (not isinstance(value, str | list | dict) or len(value) == 0):
        out.append(f"{path}: expected a non-empty string/list/object, got {_short(value)}")


def _op_len(value: Any, arg: Any, path: str, out: Problems) -> None:
    if not isinstance(value, str | list | dict | bytes) or len(value) != arg:
        out.append(f"{path}: expected length {arg}, got {_short(value)}")


def _op_keys(value: Any, arg: Any, path: str, out: Problems) -> None:
    if not isinstance(value, dict) or set(value) != set(arg):
        got = sorted(value) if isinstance(value, dict) else _type_name(value)
        out.append(f"{path}: expected exactly the keys {sorted(arg)}, got {got}")


_OPERATORS: Final[dict[str, Callable[[Any, Any, str, Problems], None]]] = {
    "$eq": _op_eq,
    "$type": _op_type,
    "$regex": _op_regex,
    "$format": _op_format,
    "$ge": _compare(">=", lambda a, b: a >= b),
    "$gt": _compare(">", lambda a, b: a > b),
    "$le": _compare("<=", lambda a, b: a <= b),
    "$lt": _compare("<", lambda a, b: a < b),
    "$oneOf": _op_one_of,
    "$not": _op_not,
    "$contains": _op_contains,
    "$nonEmpty": _op_non_empty,
    "$len": _op_len,
    "$keys": _op_keys,
}


def _is_operator_object(matcher: dict[str, Any]) -> bool:
    return bool(matcher) and all(k.startswith("$") for k in matcher)


def match(value: Any, matcher: Any, path: str = "$") -> list[str]:
    """Problems found matching ``value`` against ``matcher`` (empty: it matches)."""
    out: Problems = []
    if isinstance(matcher, dict):
        if len(matcher) == 1 and next(iter(matcher)) in _SPECIALS:
            _op_eq(value, matcher, path, out)
        elif _is_operator_object(matcher):
            for key, arg in matcher.items():
                if key == "$absent":
                    continue  # handled by the parent object
                try:
                    op = _OPERATORS[key]
                except KeyError:
                    raise MatcherError(f"{path}: unknown matcher operator {key}") from None
                op(value, arg, path, out)
        elif not isinstance(value, dict):
            out.append(f"{path}: expected an object, got {_type_name(value)} {_short(value)}")
        else:
            for key, sub in matcher.items():
                absent = isinstance(sub, dict) and sub.get("$absent") is True
                if key not in value:
                    if not absent:
                        out.append(f"{path}.{key}: missing")
                    continue
                if absent:
                    out.append(f"{path}.{key}: must be absent, got {_short(value[key])}")
                    continue
                out.extend(match(value[key], sub, f"{path}.{key}"))
    elif isinstance(matcher, list):
        if not isinstance(value, list) or len(value) != len(matcher):
            out.append(f"{path}: expected a list of {len(matcher)} items, got {_short(value)}")
        else:
            for i, (item, sub) in enumerate(zip(value, matcher, strict=True)):
                out.extend(match(item, sub, f"{path}[{i}]"))
    elif not _equal(value, matcher):
        out.append(f"{path}: expected {_short(matcher)}, got {_short(value)}")
    return out


def describe(value: Any, limit: int = 400) -> str:
    """A short readable rendering of a decoded value for reports."""
    return _short(value, limit)
