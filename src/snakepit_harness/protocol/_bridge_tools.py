"""A worker's tools as it registers them, and the calls the harness makes of them (§9.4).

A bridge-service worker tells its host which tools it has (``RegisterTools``:
names, parameter specs, ``supports_streaming``).  The harness cannot know what
a user's tool does, so those specs decide which calls it makes: a tool whose
required parameters all have a type with an example value here is callable
with that example; any tool can be given arguments by the user's
``--tool-calls`` file (:func:`parse_tool_calls`).  Types are free text on the
wire: upstream's adapters send the annotation's name lower-cased (``str``,
``int``, ``dict[str, any]``, ``optional[int]``), others send JSON-schema names;
both are read here.  ``bytes`` values are sent as binary parameters.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import LocalProtocolError

__all__ = [
    "NO_EXAMPLE",
    "ParamInfo",
    "ToolCallsError",
    "ToolInfo",
    "example_arguments",
    "parse_tool_calls",
    "tool_calls_for",
]


class _NoExample:
    def __repr__(self) -> str:
        return "NO_EXAMPLE"


# No value can be made up for this parameter type.
NO_EXAMPLE: Final = _NoExample()

# Example values by base type name: small, harmless, and valid for what a
# tool of that signature most likely does (a count of 2 keeps a streaming
# tool's stream short; strings are plain ASCII words).
_EXAMPLES: Final[dict[str, Any]] = {
    "str": "snakepit",
    "string": "snakepit",
    "text": "snakepit",
    "int": 2,
    "integer": 2,
    "float": 1.5,
    "number": 1.5,
    "double": 1.5,
    "bool": True,
    "boolean": True,
    "list": [1, 2, 3],
    "array": [1, 2, 3],
    "sequence": [1, 2, 3],
    "tuple": [1, 2, 3],
    "dict": {},
    "map": {},
    "mapping": {},
    "object": {},
    "any": "snakepit",
    "": "snakepit",
    "bytes": b"snakepit",
    "bytearray": b"snakepit",
    "binary": b"snakepit",
}
# "optional[int]", "typing.optional[int]", "int | none", "list[int]": the part that matters.
_WRAPPER: Final = re.compile(r"^(?:typing\.)?(?:optional|union)\[(.*)\]$")
_GENERIC: Final = re.compile(r"^(?:typing\.)?([a-z_]+)\[.*\]$")
_TOOL_CALLS_BYTES_KEY: Final = "$base64"


@dataclass(frozen=True)
class ParamInfo:
    """One registered parameter."""

    name: str
    type: str = ""
    required: bool = False
    # The registered default, when it decodes as JSON (None is a real default).
    default: Any = NO_EXAMPLE


@dataclass(frozen=True)
class ToolInfo:
    """One registered tool."""

    name: str
    params: tuple[ParamInfo, ...] = ()
    streaming: bool = False
    description: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def required(self) -> tuple[ParamInfo, ...]:
        return tuple(p for p in self.params if p.required)


def _base_type(type_name: str) -> str:
    text = type_name.strip().lower().replace(" ", "")
    while True:
        wrapped = _WRAPPER.match(text)
        if wrapped is None:
            break
        text = wrapped.group(1).split(",")[0]
    if "|" in text:
        text = next((part for part in text.split("|") if part not in ("none", "null")), "")
    generic = _GENERIC.match(text)
    if generic is not None:
        text = generic.group(1)
    return text.removeprefix("typing.").removeprefix("builtins.")


def example_value(type_name: str) -> Any:
    """A value of the named type, or :data:`NO_EXAMPLE`."""
    return _EXAMPLES.get(_base_type(type_name), NO_EXAMPLE)


def example_arguments(tool: ToolInfo) -> dict[str, Any] | None:
    """Arguments for ``tool``'s required parameters; None if one has no example type."""
    arguments = {}
    for param in tool.required:
        value = example_value(param.type)
        if value is NO_EXAMPLE:
            return None
        arguments[param.name] = value
    return arguments


class ToolCallsError(LocalProtocolError):
    """A ``--tool-calls`` file that is not what it should be."""


def _from_file_value(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TOOL_CALLS_BYTES_KEY}:
            try:
                return base64.b64decode(value[_TOOL_CALLS_BYTES_KEY], validate=True)
            except (binascii.Error, TypeError) as exc:
                raise ToolCallsError(f"bad {_TOOL_CALLS_BYTES_KEY} value: {exc}") from None
        return {key: _from_file_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_file_value(item) for item in value]
    return value


def parse_tool_calls(text: str) -> dict[str, list[dict[str, Any]]]:
    """Read a ``--tool-calls`` file: ``{"tool": [{"param": value, ...}, ...], ...}``.

    A value ``{"$base64": "..."}`` stands for bytes (sent as a binary
    parameter).  A tool may also map to one arguments object instead of a list.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ToolCallsError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ToolCallsError("the file must hold a JSON object: tool name -> list of arguments")
    calls: dict[str, list[dict[str, Any]]] = {}
    for name, entries in data.items():
        listed = [entries] if isinstance(entries, dict) else entries
        if not isinstance(listed, list) or not all(isinstance(e, dict) for e in listed):
            raise ToolCallsError(f"tool {name!r}: expected a list of argument objects")
        calls[name] = [_from_file_value(entry) for entry in listed]
    return calls


def tool_calls_for(
    tool: ToolInfo, given: Mapping[str, Sequence[Mapping[str, Any]]] | None = None
) -> list[dict[str, Any]]:
    """The calls to make of ``tool``: the user's, else the example (or none)."""
    if given and tool.name in given:
        return [dict(arguments) for arguments in given[tool.name]]
    example = example_arguments(tool)
    return [] if example is None else [example]
