"""Framework plugins: §7.7 shapes for pandas, numpy, DSPy and Transformers objects.

A plugin is active only when its library can be imported here, and it never
imports the library itself: it looks the library up in ``sys.modules``.  An
object of a library that was never imported cannot exist, so a plugin whose
library is absent simply never matches, and the bridge starts as fast with
Transformers installed as without it.

Shapes (normative, §7.7):

* pandas ``DataFrame`` → ``{type, shape, columns, dtypes, head, string_repr}``;
  ``head`` is a list of row records (column name → cell) of the first
  ``head_rows`` rows;
* pandas ``Series`` → ``{type, length, dtype, head, string_repr}``; ``head`` is
  the first ``head_rows`` values;
* DSPy ``Prediction`` → ``{type, module, prediction_data, string_repr}``;
  ``prediction_data`` maps each field to its serialised value (a DSPy
  ``Example`` keeps the generic shape, its fields as ``attributes``);
* a Transformers pipeline → ``{type, task, model, string_repr}``; ``model`` is
  the model's name or path (its class name when it has none).

Decisions: cells of a ``head`` are plain values (numbers, strings, booleans,
``null`` for NaN/NaT/NA, ISO 8601 text for timestamps, ``str()`` otherwise),
since a table is read cell by cell, not type by type.  numpy values are not in
§7.7's plugin list; the numpy plugin keeps the generic shapes: a numpy scalar
is ``{type, value}`` like a Python scalar, an array is an "other object" whose
``attributes`` are ``shape``, ``dtype``, ``size`` and its first ``values``.
"""

from __future__ import annotations

import datetime
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .rules import installed
from .serialize import PluginSerializer, Serializer

__all__ = ["PLUGINS", "Plugin", "available_frameworks", "plugin_serializers"]


@dataclass(frozen=True)
class Plugin:
    """A framework the bridge knows how to describe."""

    name: str  # what ping's frameworks_available reports
    module: str  # the library's top-level import name
    serialize: PluginSerializer

    def available(self) -> bool:
        return installed(self.module)


def _plain(value: Any, limit: int) -> Any:
    """A table cell as a plain wire value."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and type(value).__module__ == "numpy":
        try:
            return _plain(item(), limit)
        except (TypeError, ValueError):
            pass
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        try:
            if pandas.isna(value) is True:
                return None
        except (TypeError, ValueError):
            pass
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value
    text = str(value)
    return text if len(text) <= limit else text[:limit]


def _pandas(value: Any, ser: Serializer, depth: int) -> dict[str, Any] | None:
    pandas = sys.modules.get("pandas")
    if pandas is None:
        return None
    limits = ser.limits
    if isinstance(value, pandas.DataFrame):
        shown = value.iloc[: limits.head_rows, : limits.max_columns]
        names = [str(column) for column in shown.columns]
        head = [
            {name: _plain(cell, limits.max_repr) for name, cell in zip(names, row, strict=True)}
            for row in shown.itertuples(index=False, name=None)
        ]
        return {
            "type": type(value).__name__,
            "shape": list(value.shape),
            "columns": [str(column) for column in value.columns[: limits.max_columns]],
            "dtypes": {
                str(column): str(dtype)
                for column, dtype in list(value.dtypes.items())[: limits.max_columns]
            },
            "head": head,
            "string_repr": ser.string_repr(value.head(limits.head_rows)),
        }
    if isinstance(value, pandas.Series):
        return {
            "type": type(value).__name__,
            "length": len(value),
            "dtype": str(value.dtype),
            "head": [_plain(cell, limits.max_repr) for cell in value.iloc[: limits.head_rows]],
            "string_repr": ser.string_repr(value.head(limits.head_rows)),
        }
    return None


def _numpy(value: Any, ser: Serializer, depth: int) -> dict[str, Any] | None:
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return None
    if isinstance(value, numpy.generic) and not isinstance(value, numpy.void):
        plain = value.item()
        if isinstance(plain, bool | int | float | str | bytes):
            return {"type": type(value).__name__, "value": plain}
        return None
    if isinstance(value, numpy.ndarray):
        limits = ser.limits
        flat = value.reshape(-1)[: limits.max_items] if value.ndim else value.reshape(1)
        values = (
            [ser.describe(item, depth + 2) for item in flat] if depth < limits.max_depth else []
        )
        return ser.describe_object(
            value,
            depth,
            attributes={
                "shape": ser.describe(list(value.shape), depth + 1),
                "dtype": {"type": "str", "value": str(value.dtype)},
                "size": {"type": "int", "value": int(value.size)},
                "values": {"type": "list", "value": values, "length": int(value.size)},
            },
        )
    return None


def _dspy(value: Any, ser: Serializer, depth: int) -> dict[str, Any] | None:
    dspy = sys.modules.get("dspy")
    prediction = getattr(dspy, "Prediction", None) if dspy is not None else None
    example = getattr(dspy, "Example", None) if dspy is not None else None
    if (
        isinstance(example, type)
        and isinstance(value, example)
        and not (isinstance(prediction, type) and isinstance(value, prediction))
    ):
        # Not in §7.7's list: the generic shape, with the example's fields as
        # its attributes (its own __dict__ holds only private bookkeeping).
        fields: Any = value
        return ser.describe_object(
            value,
            depth,
            attributes={
                str(key): ser.describe(item, depth + 1)
                for key, item in list(fields.items())[: ser.limits.max_attributes]
            },
        )
    if not isinstance(prediction, type) or not isinstance(value, prediction):
        return None
    pairs: Any = value
    data: dict[str, Any] = {}
    for count, (key, item) in enumerate(pairs.items()):
        if count >= ser.limits.max_attributes:
            break
        data[str(key)] = ser.describe(item, depth + 1)
    return {
        "type": type(value).__name__,
        "module": type(value).__module__,
        "prediction_data": data,
        "string_repr": ser.string_repr(value),
    }


def _transformers(value: Any, ser: Serializer, depth: int) -> dict[str, Any] | None:
    # Looked up where it is defined: touching transformers.Pipeline would import
    # the pipelines (and torch) just to learn that this value is not one.
    base = sys.modules.get("transformers.pipelines.base")
    pipeline_class = getattr(base, "Pipeline", None)
    if not isinstance(pipeline_class, type) or not isinstance(value, pipeline_class):
        return None
    model = getattr(value, "model", None)
    name = getattr(model, "name_or_path", None) or getattr(
        getattr(model, "config", None), "name_or_path", None
    )
    return {
        "type": type(value).__name__,
        "task": getattr(value, "task", None),
        "model": str(name) if name else type(model).__name__,
        "string_repr": ser.string_repr(value),
    }


PLUGINS: Final = (
    Plugin("pandas", "pandas", _pandas),
    Plugin("numpy", "numpy", _numpy),
    Plugin("dspy", "dspy", _dspy),
    Plugin("transformers", "transformers", _transformers),
)


def available_frameworks(plugins: tuple[Plugin, ...] = PLUGINS) -> list[str]:
    """Names of the plugins whose library is installed (ping's frameworks_available)."""
    return [plugin.name for plugin in plugins if plugin.available()]


def plugin_serializers(plugins: tuple[Plugin, ...] = PLUGINS) -> list[PluginSerializer]:
    """The serialisers of the available plugins, in order."""
    chosen: list[Callable[[Any, Serializer, int], dict[str, Any] | None]] = [
        plugin.serialize for plugin in plugins if plugin.available()
    ]
    return chosen
