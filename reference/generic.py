"""The generic commands every bridge answers (PROTOCOL §6): ping, echo, compute, info.

``ping`` and ``info`` come from :class:`BaseCommandHandler`; this module adds
``echo`` and ``compute``.

Decision (§6.3 leaves the error type open): every ``compute`` failure that
the caller caused (an unknown operation, a missing or non-numeric operand,
division by zero, a result too large for a float) is ``bad_request``: the
request is wrong, the bridge is fine.  ``bool`` is not a number here, although
Python treats it as one, because JSON and MessagePack keep them apart.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, ClassVar, Final

from .adapter import BadRequestError, BaseCommandHandler

__all__ = ["COMPUTE_OPERATIONS", "GenericCommandHandler"]

COMPUTE_OPERATIONS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": operator.truediv,  # §6.3: true division, 7 / 2 == 3.5
}


def _number(args: dict[str, Any], name: str) -> int | float:
    if name not in args:
        raise BadRequestError(f"compute needs a number {name!r}")
    value = args[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequestError(
            f"compute operand {name!r} must be a number, not {type(value).__name__}"
        )
    return value


class GenericCommandHandler(BaseCommandHandler):
    """ping, echo, compute and info, as the reference v2 bridge serves them."""

    bridge_type: ClassVar[str] = "generic"
    bridge_name: ClassVar[str] = "snakepit-generic-bridge-v2"
    bridge_version: ClassVar[str] = "2.0.0"

    def _register_commands(self) -> None:
        self.register_command("echo", self.echo)
        self.register_command("compute", self.compute)

    def echo(self, args: dict[str, Any]) -> dict[str, Any]:
        """``echo`` (§6.2): the args back, unchanged."""
        return {"status": "ok", "echoed": args}

    def compute(self, args: dict[str, Any]) -> dict[str, Any]:
        """``compute`` (§6.3): add, subtract, multiply or divide ``a`` and ``b``."""
        operation = args.get("operation")
        fn = COMPUTE_OPERATIONS.get(operation) if isinstance(operation, str) else None
        if fn is None:
            known = ", ".join(COMPUTE_OPERATIONS)
            raise BadRequestError(f"unknown compute operation {operation!r}; known: {known}")
        a = _number(args, "a")
        b = _number(args, "b")
        try:
            result = fn(a, b)
        except ZeroDivisionError:
            raise BadRequestError(f"division by zero: {a!r} / {b!r}") from None
        except OverflowError as exc:
            raise BadRequestError(f"compute {operation}: {exc}") from None
        return {
            "status": "ok",
            "operation": operation,
            "inputs": {"a": a, "b": b},
            "result": result,
        }
