"""The reference worker's default adapter: a few small tools, one of each kind.

They double as the example of the adapter API (docs/bridge-service.md) and
as what the conformance cases exercise on the reference worker: an ``echo``,
arithmetic, a tool that fails, streaming tools (one that fails part way),
one that reads its session context, one that calls a host tool, a slow one
that honours its deadline, and one that returns bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Final

from .adapter import BaseAdapter, ToolError, tool
from .context import SessionContext

__all__ = ["DemoAdapter"]

# Bounds that keep a careless call from tying a worker up.
MAX_CHUNKS: Final = 10_000
MAX_SLEEP: Final = 60.0
MAX_BLOB: Final = 64 * 1024 * 1024


class DemoAdapter(BaseAdapter):
    """Tools for trying a host (or the harness) against a worker."""

    @tool(description="Return the value it was given, unchanged")
    def echo(self, value: Any) -> Any:
        return value

    @tool(description="Add two numbers")
    def add(self, a: float, b: float) -> float:
        for name, x in (("a", a), ("b", b)):
            if isinstance(x, bool) or not isinstance(x, int | float):
                raise ToolError(f"{name} must be a number, not {type(x).__name__}")
        return a + b

    @tool(description="Always fail, with the message given")
    def fail(self, message: str = "this tool always fails") -> None:
        raise ToolError(message)

    @tool(description="Stream the numbers 0 .. n-1, one chunk each")
    def count(self, n: int = 3, interval: float = 0.0) -> Iterator[dict[str, int]]:
        for index in range(min(int(n), MAX_CHUNKS)):
            if index and interval > 0:
                time.sleep(min(float(interval), MAX_SLEEP))
            yield {"index": index}

    @tool(description="Stream `after` chunks, then fail")
    def count_then_fail(self, after: int = 1) -> Iterator[dict[str, int]]:
        for index in range(min(int(after), MAX_CHUNKS)):
            yield {"index": index}
        raise ToolError(f"failed after {after} chunk(s), as asked")

    @tool(description="The session this call runs in, and the host's tools")
    def session_info(self, context: SessionContext) -> dict[str, Any]:
        return {"session_id": context.session_id, "host_tools": sorted(context.host_tools())}

    @tool(description="Run one of the host's tools (default: host_add 1 + 2)")
    def call_host(
        self,
        context: SessionContext,
        name: str = "host_add",
        arguments: dict[str, Any] | None = None,
    ) -> Any:
        return context.call_host_tool(
            name, **(arguments if arguments is not None else {"a": 1, "b": 2})
        )

    @tool(description="Sleep, but not past the call's deadline")
    def sleep(self, context: SessionContext, seconds: float = 0.05) -> dict[str, float]:
        wanted = min(max(float(seconds), 0.0), MAX_SLEEP)
        remaining = context.time_remaining()
        slept = wanted if remaining is None else min(wanted, remaining)
        time.sleep(slept)
        return {"slept": slept}

    @tool(description="Return `size` bytes (sent as binary_result)")
    def blob(self, size: int = 16) -> bytes:
        return bytes(range(256)) * (min(int(size), MAX_BLOB) // 256) + bytes(
            range(min(int(size), MAX_BLOB) % 256)
        )
