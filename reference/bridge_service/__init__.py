"""snakepit_bridge.bridge_service: the reference worker for Snakepit v0.13's BridgeService.

Write an adapter with the modern API and serve it with
``snakepit-bridge-worker --adapter my_module.MyAdapter``::

    from snakepit_bridge.bridge_service import BaseAdapter, SessionContext, tool

    class MyAdapter(BaseAdapter):
        @tool(description="Add two numbers")
        def add(self, a: float, b: float) -> float:
            return a + b

        @tool(description="Count up", supports_streaming=True)
        def count(self, n: int = 3):
            for i in range(n):
                yield {"i": i}

        @tool
        def who(self, context: SessionContext) -> str:
            return context.session_id

A :class:`~snakepit_bridge.BaseCommandHandler` works too (each command is a
tool).  See docs/bridge-service.md.
"""

from __future__ import annotations

from .adapter import BaseAdapter, CommandHandlerAdapter, ToolError, UnknownToolError, tool
from .cli import load_adapter, main
from .context import HostToolError, SessionContext

__all__ = [
    "BaseAdapter",
    "CommandHandlerAdapter",
    "HostToolError",
    "SessionContext",
    "ToolError",
    "UnknownToolError",
    "load_adapter",
    "main",
    "tool",
]
