"""The three gRPC messages a load test needs, built from PROTOCOL.md §8.1 at run time.

Building the descriptors here (in a private descriptor pool) instead of
importing generated code keeps the load tester independent of any one
bridge's ``snakepit_pb2``: the wire format depends only on field numbers and
types, which the spec fixes, and the method paths below.  Imported only where
gRPC is used (protobuf is part of the ``grpc`` extra).
"""

from __future__ import annotations

import json
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "EXECUTE_METHOD",
    "EXECUTE_STREAM_METHOD",
    "ExecuteRequest",
    "ExecuteResponse",
    "StreamResponse",
    "execute_request_bytes",
]

SERVICE: Final = "snakepit.SnakepitBridge"
EXECUTE_METHOD: Final = f"/{SERVICE}/Execute"
EXECUTE_STREAM_METHOD: Final = f"/{SERVICE}/ExecuteStream"

_F = descriptor_pb2.FieldDescriptorProto
# (name, number, type, label, map-of-bytes?) per message, from §8.1.
_MESSAGES: Final[dict[str, list[tuple[str, int, int, bool]]]] = {
    "ExecuteRequest": [
        ("command", 1, _F.TYPE_STRING, False),
        ("args", 2, _F.TYPE_MESSAGE, True),
        ("timeout_ms", 3, _F.TYPE_INT32, False),
        ("request_id", 4, _F.TYPE_STRING, False),
    ],
    "ExecuteResponse": [
        ("success", 1, _F.TYPE_BOOL, False),
        ("result", 2, _F.TYPE_MESSAGE, True),
        ("error", 3, _F.TYPE_STRING, False),
        ("timestamp", 4, _F.TYPE_INT64, False),
        ("request_id", 5, _F.TYPE_STRING, False),
    ],
    "StreamResponse": [
        ("is_final", 1, _F.TYPE_BOOL, False),
        ("chunk", 2, _F.TYPE_MESSAGE, True),
        ("error", 3, _F.TYPE_STRING, False),
        ("timestamp", 4, _F.TYPE_INT64, False),
        ("request_id", 5, _F.TYPE_STRING, False),
        ("chunk_index", 6, _F.TYPE_INT32, False),
    ],
}


def _build() -> dict[str, Any]:
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="snakepit_harness_load/snakepit.proto", package="snakepit", syntax="proto3"
    )
    for message_name, fields in _MESSAGES.items():
        message = file_proto.message_type.add(name=message_name)
        for name, number, kind, is_map in fields:
            field = message.field.add(name=name, number=number, type=kind)
            if is_map:
                # A map<string, bytes> is a repeated nested "...Entry" message.
                entry_name = name.title() + "Entry"
                entry = message.nested_type.add(name=entry_name)
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
                entry.field.add(name="value", number=2, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
                field.label = _F.LABEL_REPEATED
                field.type_name = f".snakepit.{message_name}.{entry_name}"
            else:
                field.label = _F.LABEL_OPTIONAL
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"snakepit.{name}"))
        for name in _MESSAGES
    }


def _json_value(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)  # §8.3: raw bytes may carry binary data
    return json.dumps(value, separators=(",", ":")).encode()


def execute_request_bytes(command: str, args: dict[str, Any], request_id: str = "load") -> bytes:
    """A serialised ``ExecuteRequest`` (§8.1; §8.3: one JSON text per argument)."""
    request = ExecuteRequest(command=command, request_id=request_id)
    for key, value in args.items():
        request.args[key] = _json_value(value)
    data: bytes = request.SerializeToString()
    return data


_CLASSES: Final = _build()
ExecuteRequest: Final[Any] = _CLASSES["ExecuteRequest"]
ExecuteResponse: Final[Any] = _CLASSES["ExecuteResponse"]
StreamResponse: Final[Any] = _CLASSES["StreamResponse"]
