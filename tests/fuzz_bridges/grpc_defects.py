"""Adapters with one planted defect, for fuzzing the gRPC reference bridge's serving of them.

Run as ``python -m snakepit_bridge.grpc_bridge --adapter grpc_defects:BigIntEcho``
with this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

from typing import Any

from snakepit_bridge import GenericCommandHandler


def _through_double(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _through_double(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_through_double(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return float(value)
    return value


class BigIntEcho(GenericCommandHandler):
    """echo passes integers past 2^53 through a double, as a JavaScript bridge would."""

    def echo(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"status": "ok", "echoed": _through_double(args)}
