"""Python values to the §7.7 result shapes, with configurable limits.

The shapes are normative; the limits (items shown, depth, attributes, repr
length, rows of a frame's head) are :class:`SerializationLimits`, settable
from the command line.  Plugins (:mod:`.plugins`) are asked first, at every
depth, so a DataFrame inside a list is still a DataFrame.

Decisions where §7.7 leaves room:

* A subclass of a scalar type keeps its own name and the base value:
  ``numpy.float64(1.5)`` is ``{"type": "float64", "value": 1.5}``; ``bool`` is
  checked before ``int``.  ``bytes``/``bytearray`` are scalars too
  (``{type, value}``): MessagePack carries them as ``bin``; under JSON such a
  result is a ``serialization_error`` (§4.6), as for any unencodable value.
* A non-finite float is passed through: under MessagePack it travels, under
  JSON the protocol answers ``serialization_error`` (§3.1, §4.6).  Inside a
  pandas ``head`` (tabular cells), ``NaN``/``NaT``/``NA`` become ``null``.
* Dict keys that are not strings are turned into strings (MessagePack map
  keys are strings, §3.2); ``value`` holds the first ``max_items`` entries.
* At ``max_depth`` a container's ``value`` is empty (``length`` still tells
  the size) and an object's ``attributes`` are empty: the shape holds.
* "Public attributes" are the object's own instance attributes (``vars()``, or
  its ``__slots__``) whose names do not start with ``_``; properties are not
  evaluated (they can run arbitrary code or cost a lot).  Modules, classes and
  functions get empty ``attributes`` (their namespaces are code, not data),
  and one result describes at most ``max_nodes`` values: past that budget,
  containers and objects keep their shape with empty parts.
* Any exception while describing a value is a ``serialization_error``, never a
  crash of the bridge.
"""

from __future__ import annotations

import inspect
import reprlib
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..adapter import SerializationError

__all__ = [
    "DEFAULT_LIMITS",
    "PluginSerializer",
    "SerializationLimits",
    "Serializer",
]


@dataclass(frozen=True)
class SerializationLimits:
    """How much of a value a result shows.  Defaults are the reference's (§7.7)."""

    max_items: int = 10  # §7.7: "the first items ... (reference default: 10 items)"
    max_depth: int = 4  # nesting shown before containers/objects are cut short
    max_attributes: int = 20  # attributes listed for an arbitrary object
    max_repr: int = 1000  # characters of string_repr
    head_rows: int = 5  # rows of a DataFrame/Series head (pandas' own default)
    max_columns: int = 100  # columns/dtypes of a DataFrame listed
    max_string: int | None = None  # characters of a str value; None = whole
    # Values described per result: attributes fan out (20 per object, 4 deep
    # could be 160,000), so a budget keeps one answer small and quick.
    max_nodes: int = 2000

    def __post_init__(self) -> None:
        for name in (
            "max_items",
            "max_depth",
            "max_attributes",
            "max_repr",
            "head_rows",
            "max_nodes",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_columns < 0 or (self.max_string is not None and self.max_string < 0):
            raise ValueError("max_columns and max_string must be >= 0")


DEFAULT_LIMITS: Final = SerializationLimits()

# A plugin serialiser returns the shape for values it knows, else None.
PluginSerializer = Callable[[Any, "Serializer", int], "dict[str, Any] | None"]


class Serializer:
    """Turn any value into a §7.7 shape; plugins are consulted first."""

    def __init__(
        self,
        limits: SerializationLimits = DEFAULT_LIMITS,
        plugins: Sequence[PluginSerializer] = (),
    ) -> None:
        self.limits = limits
        self.plugins = tuple(plugins)
        self._repr = reprlib.Repr()
        self._repr.maxlevel = 3
        for name in ("maxlist", "maxtuple", "maxset", "maxfrozenset", "maxdict", "maxdeque"):
            setattr(self._repr, name, max(limits.max_items, 1))
        self._repr.maxarray = max(limits.max_items, 1)
        self._repr.maxstring = max(limits.max_repr, 8)
        self._repr.maxlong = max(limits.max_repr, 8)
        self._repr.maxother = max(limits.max_repr, 8)
        self._nodes = 0

    def serialize(self, value: Any) -> dict[str, Any]:
        """The §7.7 shape of ``value``; :class:`SerializationError` if it cannot be described."""
        self._nodes = 0
        try:
            return self.describe(value, 0)
        except SerializationError:
            raise
        except RecursionError:
            raise SerializationError("value nested too deeply to serialise") from None
        except Exception as exc:
            raise SerializationError(
                f"cannot serialise a {type(value).__name__}: {type(exc).__name__}: {exc}"
            ) from None

    def describe(self, value: Any, depth: int) -> dict[str, Any]:
        """The shape of ``value`` found ``depth`` levels down (plugins call this for parts)."""
        self._nodes += 1
        if self._nodes > self.limits.max_nodes:
            depth = max(depth, self.limits.max_depth)  # out of budget: shapes without parts
        for plugin in self.plugins:
            shape = plugin(value, self, depth)
            if shape is not None:
                return shape
        limits = self.limits
        name = type(value).__name__
        if value is None:
            return {"type": "NoneType", "value": None}
        if isinstance(value, bool):
            return {"type": name, "value": bool(value)}
        if isinstance(value, int):
            return {"type": name, "value": int(value)}
        if isinstance(value, float):
            return {"type": name, "value": float(value)}
        if isinstance(value, str):
            text = str(value)
            if limits.max_string is not None:
                text = text[: limits.max_string]
            return {"type": name, "value": text}
        if isinstance(value, bytes | bytearray):
            return {"type": name, "value": bytes(value)}
        if isinstance(value, list | tuple):
            shown: list[Any] = []
            if depth < limits.max_depth:
                shown = [self.describe(item, depth + 1) for item in value[: limits.max_items]]
            return {"type": name, "value": shown, "length": len(value)}
        if isinstance(value, dict):
            items: dict[str, Any] = {}
            if depth < limits.max_depth:
                for count, (key, item) in enumerate(value.items()):
                    if count >= limits.max_items:
                        break
                    items[key if isinstance(key, str) else str(key)] = self.describe(
                        item, depth + 1
                    )
            return {"type": name, "value": items, "length": len(value)}
        return self.describe_object(value, depth)

    def describe_object(
        self, value: Any, depth: int, attributes: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``{type, module, attributes, string_repr}`` for any other object."""
        cls = type(value)
        if attributes is None:
            attributes = {}
            # Modules, classes and functions are code, not data: their
            # namespaces are not "attributes" of a result (and are huge).
            if depth < self.limits.max_depth and not _is_code(value):
                for key, item in self.public_attributes(value):
                    attributes[key] = self.describe(item, depth + 1)
        return {
            "type": cls.__name__,
            "module": cls.__module__,
            "attributes": attributes,
            "string_repr": self.string_repr(value),
        }

    def public_attributes(self, value: Any) -> list[tuple[str, Any]]:
        """The object's own public attributes, at most ``max_attributes`` of them."""
        limit = self.limits.max_attributes
        found: list[tuple[str, Any]] = []
        try:
            own = vars(value)
        except TypeError:
            own = None
        if own is not None:
            for key, item in list(own.items()):
                if isinstance(key, str) and not key.startswith("_"):
                    found.append((key, item))
                    if len(found) >= limit:
                        break
            return found
        for klass in type(value).__mro__:
            slots = vars(klass).get("__slots__", ())
            for slot in (slots,) if isinstance(slots, str) else slots:
                if not isinstance(slot, str) or slot.startswith("_") or len(found) >= limit:
                    continue
                try:
                    found.append((slot, getattr(value, slot)))
                except AttributeError:
                    continue
        return found

    def string_repr(self, value: Any) -> str:
        """``repr(value)`` cut to ``max_repr`` characters; never raises."""
        try:
            text = self._repr.repr(value)
        except Exception as exc:
            text = f"<{type(value).__name__} object; repr failed: {type(exc).__name__}>"
        limit = self.limits.max_repr
        return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def _is_code(value: Any) -> bool:
    return isinstance(value, type | types.ModuleType) or inspect.isroutine(value)
