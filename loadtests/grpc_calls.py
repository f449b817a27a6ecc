"""The gRPC calls a load test makes, pre-serialised, from the generated protobuf code.

Load users send each point's request as bytes with identity serialisers, so
building it once is all they need of protobuf: an ``ExecuteRequest`` from
``snakepit_harness.protos`` (the one way messages are built in the tree), its
argument values through the core's §8.3 conversions, and the method paths of
the service as the generated descriptor names them.  No gevent, no locust:
the baseline echo server and the benchmarks import it too.
"""

from __future__ import annotations

from typing import Any, Final

from snakepit_harness.protocol import encode_args
from snakepit_harness.protos import snakepit_pb2

__all__ = ["EXECUTE_METHOD", "EXECUTE_STREAM_METHOD", "SERVICE", "execute_request_bytes"]

SERVICE: Final = snakepit_pb2.DESCRIPTOR.services_by_name["SnakepitBridge"].full_name
EXECUTE_METHOD: Final = f"/{SERVICE}/Execute"
EXECUTE_STREAM_METHOD: Final = f"/{SERVICE}/ExecuteStream"


def execute_request_bytes(command: str, args: dict[str, Any], request_id: str = "load") -> bytes:
    """A serialised ``ExecuteRequest`` (§8.1; §8.3: one JSON text per argument value)."""
    request = snakepit_pb2.ExecuteRequest(
        command=command, args=encode_args(args), request_id=request_id
    )
    data: bytes = request.SerializeToString()
    return data
