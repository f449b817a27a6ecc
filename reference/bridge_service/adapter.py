"""The modern adapter API: ``BaseAdapter`` and ``@tool``, and a wrapper for command handlers.

An adapter is a class whose ``@tool`` methods are its tools.  The parameter
specs Snakepit sees come from each method's signature (name, annotation,
default) unless ``@tool(parameters=...)`` gives them; a generator method, or
``@tool(supports_streaming=True)``, is a streaming tool whose yielded values
are the chunks.  A parameter annotated :class:`SessionContext` (or named
``context``) is not a tool parameter: it receives the call's context (its
``session_id``, the host's tools, the time left).  Inside a tool,
``self.context`` is the same object.

Unlike upstream's ``BaseAdapter``, this one dispatches calls itself
(``execute_tool``), so an adapter with only ``@tool`` methods works; an
adapter may still override ``execute_tool(tool_name, arguments, context)``.
:class:`CommandHandlerAdapter` serves a :class:`~snakepit_bridge.BaseCommandHandler`
(each registered command becomes a tool taking the command's arguments).
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeVar, overload

from snakepit_harness.protocol.bridge_service import ParamInfo, ToolInfo

from ..adapter import BaseCommandHandler
from .context import SessionContext

__all__ = [
    "BaseAdapter",
    "CommandHandlerAdapter",
    "ToolError",
    "UnknownToolError",
    "tool",
]

F = TypeVar("F", bound=Callable[..., Any])

_TOOL_ATTRIBUTE: Final = "_snakepit_tool"
# The context of the call in progress on this thread (see BaseAdapter.context).
_CURRENT: contextvars.ContextVar[SessionContext] = contextvars.ContextVar("snakepit_tool_context")


class ToolError(Exception):
    """A tool failed in a way it can explain; ``error_type`` names it in the error JSON."""

    error_type: ClassVar[str] = "ToolError"


class UnknownToolError(ToolError):
    error_type = "UnknownToolError"


@dataclass(frozen=True)
class _ToolMark:
    description: str
    supports_streaming: bool | None
    parameters: tuple[ParamInfo, ...] | None
    metadata: Mapping[str, str] = field(default_factory=dict)


@overload
def tool(fn: F) -> F: ...


@overload
def tool(
    *,
    description: str = "",
    supports_streaming: bool | None = None,
    parameters: Iterable[ParamInfo] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Callable[[F], F]: ...


def tool(
    fn: F | None = None,
    *,
    description: str = "",
    supports_streaming: bool | None = None,
    parameters: Iterable[ParamInfo] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Any:
    """Mark a method as a tool: ``@tool`` or ``@tool(description=..., ...)``.

    ``supports_streaming`` defaults to "the method is a generator";
    ``parameters`` replaces the specs read from the signature.
    """

    def mark(method: F) -> F:
        setattr(
            method,
            _TOOL_ATTRIBUTE,
            _ToolMark(
                description=description or inspect.getdoc(method) or "",
                supports_streaming=supports_streaming,
                parameters=tuple(parameters) if parameters is not None else None,
                metadata=dict(metadata or {}),
            ),
        )
        return method

    return mark(fn) if fn is not None else mark


def _is_context_parameter(param: inspect.Parameter) -> bool:
    annotation = param.annotation
    return param.name == "context" or annotation is SessionContext or annotation == "SessionContext"


def _type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "any"
    if isinstance(annotation, str):
        return annotation.lower()
    name = getattr(annotation, "__name__", None)
    if name is not None and not getattr(annotation, "__args__", None):
        return str(name).lower()
    return str(annotation).replace("typing.", "").lower()


def _parameters(method: Callable[..., Any]) -> tuple[ParamInfo, ...]:
    specs = []
    for param in inspect.signature(method).parameters.values():
        if _is_context_parameter(param) or param.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            continue
        required = param.default is inspect.Parameter.empty
        default = None if required else param.default
        specs.append(ParamInfo(param.name, _type_name(param.annotation), required, default))
    return tuple(specs)


@dataclass(frozen=True)
class _BoundTool:
    info: ToolInfo
    run: Callable[[dict[str, Any], SessionContext], Any]


class BaseAdapter:
    """Base class of adapters: ``@tool`` methods are the tools.

    ``initialize()`` runs once when the worker starts, ``cleanup()`` once when
    it stops.  One adapter instance serves every call, possibly from several
    threads at once.
    """

    def __init__(self) -> None:
        self._tools: dict[str, _BoundTool] | None = None

    # -- hooks --------------------------------------------------------------

    def initialize(self) -> None:
        """Load models, open connections: called once before the worker reports ready."""

    def cleanup(self) -> None:
        """Release what ``initialize`` took: called once when the worker stops."""

    # -- tools --------------------------------------------------------------

    @property
    def context(self) -> SessionContext:
        """The context of the tool call in progress (raises outside a call)."""
        try:
            return _CURRENT.get()
        except LookupError:
            raise RuntimeError("self.context is only set while a tool runs") from None

    def _discover(self) -> dict[str, _BoundTool]:
        tools: dict[str, _BoundTool] = {}
        for name in dir(type(self)):
            # Static look-up first: reading every attribute would run properties.
            mark = getattr(inspect.getattr_static(type(self), name, None), _TOOL_ATTRIBUTE, None)
            if not isinstance(mark, _ToolMark):
                continue
            method = getattr(self, name)
            streaming = (
                mark.supports_streaming
                if mark.supports_streaming is not None
                else inspect.isgeneratorfunction(method)
            )
            info = ToolInfo(
                name=name,
                params=mark.parameters if mark.parameters is not None else _parameters(method),
                streaming=streaming,
                description=mark.description,
                metadata={"adapter": type(self).__name__, **mark.metadata},
            )
            tools[name] = _BoundTool(info, _method_runner(method))
        return tools

    def bound_tools(self) -> dict[str, _BoundTool]:
        if self._tools is None:
            self._tools = self._discover()
        return self._tools

    def tools(self) -> list[ToolInfo]:
        """What the worker registers with its host (§9.4), sorted by name."""
        return [bound.info for _, bound in sorted(self.bound_tools().items())]

    def execute_tool(
        self, tool_name: str, arguments: dict[str, Any], context: SessionContext
    ) -> Any:
        """Run one tool: its result, or a generator of chunks for a streaming tool."""
        bound = self.bound_tools().get(tool_name)
        if bound is None:
            known = ", ".join(sorted(self.bound_tools())) or "none"
            raise UnknownToolError(f"unknown tool {tool_name!r}; this adapter has: {known}")
        token = _CURRENT.set(context)
        try:
            return bound.run(arguments, context)
        finally:
            _CURRENT.reset(token)


def _method_runner(method: Callable[..., Any]) -> Callable[[dict[str, Any], SessionContext], Any]:
    signature = inspect.signature(method)
    context_names = [p.name for p in signature.parameters.values() if _is_context_parameter(p)]

    def run(arguments: dict[str, Any], context: SessionContext) -> Any:
        call_arguments = dict(arguments)
        for name in context_names:
            call_arguments[name] = context
        try:
            signature.bind(**call_arguments)
        except TypeError as exc:
            raise ToolError(f"bad arguments for {method.__name__}: {exc}") from None
        return method(**call_arguments)

    return run


class CommandHandlerAdapter(BaseAdapter):
    """A :class:`BaseCommandHandler` served as tools: one tool per registered command.

    A command takes its arguments as one dict, so its tool declares no
    parameters and passes whatever arguments the call has.
    """

    def __init__(self, handler: BaseCommandHandler) -> None:
        super().__init__()
        self.handler = handler

    def _discover(self) -> dict[str, _BoundTool]:
        handler = self.handler

        def runner(command: str) -> Callable[[dict[str, Any], SessionContext], Any]:
            return lambda arguments, context: handler.process_command(command, arguments)

        return {
            name: _BoundTool(
                ToolInfo(
                    name=name,
                    description=f"{type(handler).__name__} command {name!r}",
                    metadata={"adapter": type(handler).__name__, "arguments": "any"},
                ),
                runner(name),
            )
            for name in handler.get_supported_commands()
        }
