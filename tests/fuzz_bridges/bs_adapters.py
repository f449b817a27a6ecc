"""Adapters with one planted defect, for fuzzing (fuzz/bridge_service.py) and load-testing workers.

Serve one with ``snakepit-bridge-worker --adapter tests/fuzz_bridges/bs_adapters.py:DeepCrash``.
"""

from __future__ import annotations

import os
from typing import Any, Final

from snakepit_bridge.bridge_service.adapter import ToolError, tool
from snakepit_bridge.bridge_service.demo import DemoAdapter

# The depth past which DeepCrash dies: inside the 33-100 range issue 14.2 names.
CRASH_DEPTH: Final = 50


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


class DeepCrash(DemoAdapter):
    """echo kills the worker on a value nested deeper than CRASH_DEPTH."""

    @tool(description="Return the value it was given, unchanged")
    def echo(self, value: Any) -> Any:
        if _depth(value) > CRASH_DEPTH:
            os._exit(3)  # DEFECT: a recursion limit of its own, hit as a crash
        return value


class EchoFails(DemoAdapter):
    """echo always fails; every other tool works (load falls back to the next tool)."""

    @tool(description="Return the value it was given, unchanged")
    def echo(self, value: Any) -> Any:
        raise ToolError("echo is broken")  # DEFECT
