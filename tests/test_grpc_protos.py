"""The committed gRPC code matches snakepit.proto, and the proto matches PROTOCOL.md §8.1.

The field table below is copied by hand from the spec (not derived from the
proto), so a renumbered field or a renamed message fails here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "src" / "snakepit_harness" / "protos"

pytest.importorskip("grpc_tools", reason="grpcio-tools is needed to regenerate the gRPC code")


def _load_gen_protos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "tools" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Lines that only stamp the generator's version: normalised when the installed
# grpcio-tools differs from the one that produced the committed code, so a
# tools upgrade alone does not fail the suite (a changed proto still does).
_VERSION_STAMPS = [
    re.compile(rb"^# Protobuf Python Version: .*$", re.M),
    re.compile(rb"ValidateProtobufRuntimeVersion\([^)]*\)", re.S),
    re.compile(rb"^GRPC_GENERATED_VERSION = .*$", re.M),
]


def _without_stamps(data: bytes) -> bytes:
    for pattern in _VERSION_STAMPS:
        data = pattern.sub(b"<version>", data)
    return data


def test_committed_code_is_what_the_proto_generates(tmp_path: Path) -> None:
    import grpc_tools

    gen = _load_gen_protos()
    generated = gen.generate(tmp_path)
    committed_grpc = (PROTO_DIR / "snakepit_pb2_grpc.py").read_text()
    stamp = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", committed_grpc)
    assert stamp, "snakepit_pb2_grpc.py has no GRPC_GENERATED_VERSION line"
    tools_version = getattr(grpc_tools, "__version__", None)
    if tools_version is None:
        from grpc_tools import grpc_version

        tools_version = grpc_version.VERSION
    same_tools = stamp.group(1) == tools_version
    for name, path in generated.items():
        fresh = path.read_bytes()
        old = (PROTO_DIR / name).read_bytes()
        if not same_tools:
            fresh, old = _without_stamps(fresh), _without_stamps(old)
        assert fresh == old, (
            f"src/snakepit_harness/protos/{name} is stale: "
            "run `python tools/gen_protos.py` (tox -e protos)"
        )


def test_drift_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself can fail: a proto with one field renumbered differs."""
    gen = _load_gen_protos()
    proto = (PROTO_DIR / "snakepit.proto").read_text()
    changed = proto.replace("int32 timeout_ms = 3;", "int32 timeout_ms = 7;")
    assert changed != proto
    fake_dir = tmp_path / "proto"
    fake_dir.mkdir()
    (fake_dir / "snakepit.proto").write_text(changed)
    monkeypatch.setattr(gen, "PROTO_DIR", fake_dir)
    generated = gen.generate(tmp_path / "out")
    pb2 = generated["snakepit_pb2.py"].read_bytes()
    assert pb2 != (PROTO_DIR / "snakepit_pb2.py").read_bytes()


def test_generated_grpc_module_imports_absolutely() -> None:
    text = (PROTO_DIR / "snakepit_pb2_grpc.py").read_text()
    assert "from snakepit_harness.protos import snakepit_pb2" in text
    assert "\nimport snakepit_pb2" not in text


# PROTOCOL.md §8.1, by hand: message -> {field: (number, type)}.
SPEC_FIELDS = {
    "ExecuteRequest": {
        "command": (1, "string"),
        "args": (2, "map"),
        "timeout_ms": (3, "int32"),
        "request_id": (4, "string"),
    },
    "ExecuteResponse": {
        "success": (1, "bool"),
        "result": (2, "map"),
        "error": (3, "string"),
        "timestamp": (4, "int64"),
        "request_id": (5, "string"),
    },
    "StreamResponse": {
        "is_final": (1, "bool"),
        "chunk": (2, "map"),
        "error": (3, "string"),
        "timestamp": (4, "int64"),
        "request_id": (5, "string"),
        "chunk_index": (6, "int32"),
    },
    "SessionRequest": {
        "session_id": (1, "string"),
        "command": (2, "string"),
        "args": (3, "map"),
        "timeout_ms": (4, "int32"),
        "request_id": (5, "string"),
    },
    "HealthRequest": {"worker_id": (1, "string")},
    "HealthResponse": {
        "healthy": (1, "bool"),
        "worker_id": (2, "string"),
        "uptime_ms": (3, "int64"),
        "total_requests": (4, "int64"),
        "total_errors": (5, "int64"),
        "version": (6, "string"),
    },
    "InfoRequest": {"include_capabilities": (1, "bool"), "include_stats": (2, "bool")},
    "InfoResponse": {
        "worker_type": (1, "string"),
        "version": (2, "string"),
        "supported_commands": (3, "repeated string"),
        "capabilities": (4, "map"),
        "stats": (5, "WorkerStats"),
        "system_info": (6, "map"),
    },
    "WorkerStats": {
        "requests_handled": (1, "int64"),
        "requests_failed": (2, "int64"),
        "uptime_ms": (3, "int64"),
        "memory_usage_bytes": (4, "int64"),
        "cpu_usage_percent": (5, "double"),
        "active_sessions": (6, "int64"),
    },
}

SPEC_METHODS = {
    "Execute": ("ExecuteRequest", "ExecuteResponse", False),
    "ExecuteStream": ("ExecuteRequest", "StreamResponse", True),
    "ExecuteInSession": ("SessionRequest", "ExecuteResponse", False),
    "ExecuteInSessionStream": ("SessionRequest", "StreamResponse", True),
    "Health": ("HealthRequest", "HealthResponse", False),
    "GetInfo": ("InfoRequest", "InfoResponse", False),
}


def _type_name(field: Any) -> str:
    from google.protobuf.descriptor import FieldDescriptor

    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return "map"
    if field.message_type is not None:
        return str(field.message_type.name)
    names = {
        FieldDescriptor.TYPE_STRING: "string",
        FieldDescriptor.TYPE_BOOL: "bool",
        FieldDescriptor.TYPE_INT32: "int32",
        FieldDescriptor.TYPE_INT64: "int64",
        FieldDescriptor.TYPE_DOUBLE: "double",
        FieldDescriptor.TYPE_BYTES: "bytes",
    }
    name = names[field.type]
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:
        repeated = field.label == FieldDescriptor.LABEL_REPEATED
    return f"repeated {name}" if repeated else name


@pytest.mark.parametrize("message", sorted(SPEC_FIELDS))
def test_message_fields_match_the_spec(message: str) -> None:
    from snakepit_harness.protos import snakepit_pb2

    descriptor = snakepit_pb2.DESCRIPTOR.message_types_by_name[message]
    assert descriptor.full_name == f"snakepit.{message}"
    actual = {f.name: (f.number, _type_name(f)) for f in descriptor.fields}
    assert actual == SPEC_FIELDS[message]


def test_map_values_are_bytes_and_keys_strings() -> None:
    from google.protobuf.descriptor import FieldDescriptor

    from snakepit_harness.protos import snakepit_pb2

    for message, field in [
        ("ExecuteRequest", "args"),
        ("ExecuteResponse", "result"),
        ("StreamResponse", "chunk"),
        ("SessionRequest", "args"),
    ]:
        descriptor: Any = snakepit_pb2.DESCRIPTOR.message_types_by_name[message]
        entry = descriptor.fields_by_name[field]
        value = entry.message_type.fields_by_name["value"]
        key = entry.message_type.fields_by_name["key"]
        assert (key.type, value.type) == (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


def test_service_methods_match_the_spec() -> None:
    from snakepit_harness.protos import snakepit_pb2

    service = snakepit_pb2.DESCRIPTOR.services_by_name["SnakepitBridge"]
    assert service.full_name == "snakepit.SnakepitBridge"
    actual = {
        m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in service.methods
    }
    assert actual == SPEC_METHODS
    assert all(not m.client_streaming for m in service.methods)


# -- a client built from the spec's field list alone ---------------------------------

_SCALARS = ("string", "bool", "int32", "int64", "double", "bytes")
_MAP_VALUE = {
    ("InfoResponse", "capabilities"): "string",
    ("InfoResponse", "system_info"): "string",
}


def _spec_classes() -> dict[str, Any]:
    """Message classes built at run time from SPEC_FIELDS (no generated code involved)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FieldDescriptorProto
    scalar = {kind: proto.Type.Value(f"TYPE_{kind.upper()}") for kind in _SCALARS}
    optional, repeated, message_type = (
        proto.LABEL_OPTIONAL,
        proto.LABEL_REPEATED,
        proto.TYPE_MESSAGE,
    )
    fdp = descriptor_pb2.FileDescriptorProto(
        name="independent/snakepit_spec.proto", package="snakepit", syntax="proto3"
    )
    for message, fields in SPEC_FIELDS.items():
        msg = fdp.message_type.add(name=message)
        for name, (number, kind) in fields.items():
            field = msg.field.add(name=name, number=number, json_name=name)
            if kind == "map":
                entry_name = "".join(p.title() for p in name.split("_")) + "Entry"
                entry = msg.nested_type.add(name=entry_name)
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=scalar["string"], label=optional)
                value_kind = _MAP_VALUE.get((message, name), "bytes")
                entry.field.add(name="value", number=2, type=scalar[value_kind], label=optional)
                field.type, field.label = message_type, repeated
                field.type_name = f".snakepit.{message}.{entry_name}"
            elif kind == "repeated string":
                field.type, field.label = scalar["string"], repeated
            elif kind in scalar:
                field.type, field.label = scalar[kind], optional
            else:  # a message type
                field.type, field.label = message_type, optional
                field.type_name = f".snakepit.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"snakepit.{name}"))
        for name in SPEC_FIELDS
    }


def test_a_client_built_from_the_spec_table_talks_to_the_reference_bridge() -> None:
    pytest.importorskip("grpc", reason="the grpc extra is not installed")
    import grpc

    from snakepit_harness.transports.grpc import GrpcBridge

    m = _spec_classes()

    def rpc(channel: Any, name: str, request: Any, reply: str, stream: bool = False) -> Any:
        factory = channel.unary_stream if stream else channel.unary_unary
        call = factory(
            f"/snakepit.SnakepitBridge/{name}",
            request_serializer=lambda msg: msg.SerializeToString(),
            response_deserializer=m[reply].FromString,
        )
        return call(request, timeout=10)

    with (
        GrpcBridge([sys.executable, "-m", "snakepit_bridge.grpc_bridge"]) as bridge,
        grpc.insecure_channel(bridge.address) as channel,
    ):
        ok = rpc(
            channel,
            "Execute",
            m["ExecuteRequest"](command="echo", args={"x": b"[1,2]"}, request_id="i-1"),
            "ExecuteResponse",
        )
        assert ok.success and ok.request_id == "i-1" and ok.timestamp > 10**18
        assert json.loads(ok.result["echoed"]) == {"x": [1, 2]}
        chunks = list(
            rpc(
                channel,
                "ExecuteInSessionStream",
                m["SessionRequest"](session_id="s", command="ping_stream", args={"count": b"2"}),
                "StreamResponse",
                stream=True,
            )
        )
        assert [(c.chunk_index, c.is_final) for c in chunks] == [(0, False), (1, False), (2, True)]
        health = rpc(channel, "Health", m["HealthRequest"](worker_id="w"), "HealthResponse")
        assert health.healthy and health.worker_id == "w" and health.total_requests >= 2
        info = rpc(
            channel,
            "GetInfo",
            m["InfoRequest"](include_capabilities=True, include_stats=True),
            "InfoResponse",
        )
        assert "ping_stream" in info.supported_commands
        assert info.stats.active_sessions == 1 and info.capabilities["streaming"] == "true"
