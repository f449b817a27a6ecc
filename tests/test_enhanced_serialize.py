"""§7.7 result shapes: scalars, containers, other objects, limits, failures, pandas/numpy.

Every row is a value and the exact shape a user must receive for it under the
reference limits; then the limits are changed and must take effect; then values
that cannot be described give ``serialization_error`` instead of a crash.
"""

from __future__ import annotations

import collections
import decimal
import fractions
from typing import Any

import pytest
from snakepit_bridge import CommandError, SerializationError
from snakepit_bridge.enhanced import EnhancedCommandHandler, SerializationLimits, Serializer
from snakepit_bridge.enhanced.plugins import PLUGINS, plugin_serializers


class Point:
    def __init__(self) -> None:
        self.x = 1
        self.label = "p"
        self._hidden = "secret"


class Slotted:
    __slots__ = ("_private", "unset", "x")

    def __init__(self) -> None:
        self.x = 2.5
        self._private = 0


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class BadVars:
    @property
    def __dict__(self) -> dict[str, Any]:  # type: ignore[override]
        raise RuntimeError("attributes exploded")


def _ten(n: int) -> list[dict[str, Any]]:
    return [{"type": "int", "value": i} for i in range(n)]


SHAPES: list[tuple[str, Any, dict[str, Any]]] = [
    ("none", None, {"type": "NoneType", "value": None}),
    ("bool", True, {"type": "bool", "value": True}),
    ("int", 7, {"type": "int", "value": 7}),
    ("big int", 2**70, {"type": "int", "value": 2**70}),
    ("float", 2.5, {"type": "float", "value": 2.5}),
    ("str", "héllo", {"type": "str", "value": "héllo"}),
    ("bytes", b"\x00\xff", {"type": "bytes", "value": b"\x00\xff"}),
    ("list", [1, 2], {"type": "list", "value": _ten(3)[1:], "length": 2}),
    ("tuple", (0, 1), {"type": "tuple", "value": _ten(2), "length": 2}),
    ("list cut at 10", list(range(25)), {"type": "list", "value": _ten(10), "length": 25}),
    (
        "dict",
        {"a": 1, 2: "b"},
        {
            "type": "dict",
            "value": {"a": {"type": "int", "value": 1}, "2": {"type": "str", "value": "b"}},
            "length": 2,
        },
    ),
    (
        "ordered dict keeps its name",
        collections.OrderedDict(k=None),
        {"type": "OrderedDict", "value": {"k": {"type": "NoneType", "value": None}}, "length": 1},
    ),
    (
        "object",
        Point(),
        {
            "type": "Point",
            "module": __name__,
            "attributes": {
                "x": {"type": "int", "value": 1},
                "label": {"type": "str", "value": "p"},
            },
            "string_repr": {"$startswith": "<"},
        },
    ),
    (
        "slots object",
        Slotted(),
        {
            "type": "Slotted",
            "module": __name__,
            "attributes": {"x": {"type": "float", "value": 2.5}},
            "string_repr": {"$startswith": "<"},
        },
    ),
    (
        "fraction",
        fractions.Fraction(1, 3),
        {
            "type": "Fraction",
            "module": "fractions",
            "attributes": {},
            "string_repr": "Fraction(1, 3)",
        },
    ),
    (
        "decimal",
        decimal.Decimal("1.5"),
        {"type": "Decimal", "module": "decimal", "attributes": {}, "string_repr": "Decimal('1.5')"},
    ),
    (
        "set is an other object",
        {3},
        {"type": "set", "module": "builtins", "attributes": {}, "string_repr": "{3}"},
    ),
    (
        "repr that raises",
        BadRepr(),
        {
            "type": "BadRepr",
            "module": __name__,
            "attributes": {},
            "string_repr": {"$startswith": "<BadRepr"},
        },
    ),
]


def _matches(value: Any, expected: Any) -> bool:
    if isinstance(expected, dict) and "$startswith" in expected:
        return isinstance(value, str) and value.startswith(expected["$startswith"])
    if isinstance(expected, dict):
        return (
            isinstance(value, dict)
            and value.keys() == expected.keys()
            and all(_matches(value[k], v) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(value, list)
            and len(value) == len(expected)
            and all(_matches(a, b) for a, b in zip(value, expected, strict=True))
        )
    return type(value) is type(expected) and value == expected


@pytest.mark.parametrize(("value", "expected"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_shapes(value: Any, expected: dict[str, Any]) -> None:
    shape = Serializer(plugins=plugin_serializers(PLUGINS)).serialize(value)
    assert _matches(shape, expected), shape


def test_limits_are_configurable() -> None:
    ser = Serializer(SerializationLimits(max_items=2, max_depth=1, max_repr=12, max_string=3))
    assert ser.serialize(list(range(5))) == {"type": "list", "value": _ten(2), "length": 5}
    nested = ser.serialize([[1, 2]])
    assert nested == {
        "type": "list",
        "value": [{"type": "list", "value": [], "length": 2}],
        "length": 1,
    }
    assert ser.serialize("abcdef") == {"type": "str", "value": "abc"}
    assert len(ser.serialize(Point())["string_repr"]) <= 12
    with pytest.raises(ValueError):
        SerializationLimits(max_items=-1)


def test_code_is_not_expanded_and_results_stay_small() -> None:
    import json

    ser = Serializer()
    module = ser.serialize(json)
    assert module["type"] == "module" and module["attributes"] == {}
    assert ser.serialize(json.dumps)["attributes"] == {}
    wide = [{f"k{i}": [list(range(10))] * 10 for i in range(10)} for _ in range(10)]
    small = Serializer(SerializationLimits(max_nodes=50)).serialize(wide)
    assert small["length"] == 10
    assert len(json.dumps(small)) < len(json.dumps(ser.serialize(wide)))


def test_deep_nesting_is_cut_not_crashed() -> None:
    value: Any = []
    for _ in range(5000):
        value = [value]
    shape = Serializer().serialize(value)
    depth = 0
    while shape["value"]:
        shape = shape["value"][0]
        depth += 1
    assert depth == 4 and shape["length"] == 1


def test_unserialisable_is_serialization_error() -> None:
    with pytest.raises(SerializationError, match="attributes exploded"):
        Serializer().serialize(BadVars())


def test_call_with_unserialisable_result_keeps_serving_and_storing() -> None:
    handler = EnhancedCommandHandler()
    handler.process_command("store", {"id": "v", "value": [1]})
    # A stored object that fails to describe itself: put one in as a call would.
    handler.store.put("", "bad", BadVars(), from_wire=False)
    with pytest.raises(CommandError) as caught:
        handler.process_command("retrieve", {"id": "bad"})
    assert caught.value.error_type == "serialization_error"
    assert handler.process_command("retrieve", {"id": "v"})["object"]["length"] == 1


def test_pandas_dataframe_and_series_shapes() -> None:
    pytest.importorskip("pandas", reason="pandas not installed")
    handler = EnhancedCommandHandler()
    data = {
        "city": ["Oslo", "Lima", "Pune", "Kyiv", "Rome", "Nice"],
        "temp": [1.5, 19.0, None, 3.0, 15.5, 14.0],
    }
    out = handler.process_command(
        "call", {"target": "pandas.DataFrame", "kwargs": {"data": data}, "store_as": "df"}
    )["result"]
    assert set(out) == {"type", "shape", "columns", "dtypes", "head", "string_repr"}
    assert out["type"] == "DataFrame" and out["shape"] == [6, 2]
    assert out["columns"] == ["city", "temp"]
    assert out["dtypes"]["temp"] == "float64" and out["dtypes"]["city"] in ("object", "str")
    assert out["head"][:3] == [
        {"city": "Oslo", "temp": 1.5},
        {"city": "Lima", "temp": 19.0},
        {"city": "Pune", "temp": None},  # NaN travels as null (strict JSON)
    ]
    assert len(out["head"]) == 5 and "Oslo" in out["string_repr"]
    series = handler.process_command("call", {"target": "stored.df.get", "args": ["temp"]})[
        "result"
    ]
    assert set(series) == {"type", "length", "dtype", "head", "string_repr"}
    assert series["type"] == "Series" and series["length"] == 6 and series["dtype"] == "float64"
    assert series["head"] == [1.5, 19.0, None, 3.0, 15.5]


def test_numpy_values() -> None:
    pytest.importorskip("numpy", reason="numpy not installed")
    handler = EnhancedCommandHandler()
    scalar = handler.process_command("call", {"target": "numpy.int64", "args": [3]})["result"]
    assert scalar == {"type": "int64", "value": 3}
    array = handler.process_command("call", {"target": "numpy.arange", "args": [12]})["result"]
    assert array["type"] == "ndarray" and array["module"] == "numpy"
    assert array["attributes"]["shape"]["value"] == [{"type": "int", "value": 12}]
    assert array["attributes"]["values"]["length"] == 12
    assert len(array["attributes"]["values"]["value"]) == 10
