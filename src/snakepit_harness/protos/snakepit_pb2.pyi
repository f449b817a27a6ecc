from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecuteRequest(_message.Message):
    __slots__ = ("command", "args", "timeout_ms", "request_id")
    class ArgsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    command: str
    args: _containers.ScalarMap[str, bytes]
    timeout_ms: int
    request_id: str
    def __init__(self, command: _Optional[str] = ..., args: _Optional[_Mapping[str, bytes]] = ..., timeout_ms: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("success", "result", "error", "timestamp", "request_id")
    class ResultEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    success: bool
    result: _containers.ScalarMap[str, bytes]
    error: str
    timestamp: int
    request_id: str
    def __init__(self, success: _Optional[bool] = ..., result: _Optional[_Mapping[str, bytes]] = ..., error: _Optional[str] = ..., timestamp: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("is_final", "chunk", "error", "timestamp", "request_id", "chunk_index")
    class ChunkEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    is_final: bool
    chunk: _containers.ScalarMap[str, bytes]
    error: str
    timestamp: int
    request_id: str
    chunk_index: int
    def __init__(self, is_final: _Optional[bool] = ..., chunk: _Optional[_Mapping[str, bytes]] = ..., error: _Optional[str] = ..., timestamp: _Optional[int] = ..., request_id: _Optional[str] = ..., chunk_index: _Optional[int] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("session_id", "command", "args", "timeout_ms", "request_id")
    class ArgsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    command: str
    args: _containers.ScalarMap[str, bytes]
    timeout_ms: int
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., command: _Optional[str] = ..., args: _Optional[_Mapping[str, bytes]] = ..., timeout_ms: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("healthy", "worker_id", "uptime_ms", "total_requests", "total_errors", "version")
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    UPTIME_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ERRORS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    healthy: bool
    worker_id: str
    uptime_ms: int
    total_requests: int
    total_errors: int
    version: str
    def __init__(self, healthy: _Optional[bool] = ..., worker_id: _Optional[str] = ..., uptime_ms: _Optional[int] = ..., total_requests: _Optional[int] = ..., total_errors: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ("include_capabilities", "include_stats")
    INCLUDE_CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_STATS_FIELD_NUMBER: _ClassVar[int]
    include_capabilities: bool
    include_stats: bool
    def __init__(self, include_capabilities: _Optional[bool] = ..., include_stats: _Optional[bool] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("worker_type", "version", "supported_commands", "capabilities", "stats", "system_info")
    class CapabilitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class SystemInfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_COMMANDS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_INFO_FIELD_NUMBER: _ClassVar[int]
    worker_type: str
    version: str
    supported_commands: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.ScalarMap[str, str]
    stats: WorkerStats
    system_info: _containers.ScalarMap[str, str]
    def __init__(self, worker_type: _Optional[str] = ..., version: _Optional[str] = ..., supported_commands: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Mapping[str, str]] = ..., stats: _Optional[_Union[WorkerStats, _Mapping]] = ..., system_info: _Optional[_Mapping[str, str]] = ...) -> None: ...

class WorkerStats(_message.Message):
    __slots__ = ("requests_handled", "requests_failed", "uptime_ms", "memory_usage_bytes", "cpu_usage_percent", "active_sessions")
    REQUESTS_HANDLED_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FAILED_FIELD_NUMBER: _ClassVar[int]
    UPTIME_MS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    requests_handled: int
    requests_failed: int
    uptime_ms: int
    memory_usage_bytes: int
    cpu_usage_percent: float
    active_sessions: int
    def __init__(self, requests_handled: _Optional[int] = ..., requests_failed: _Optional[int] = ..., uptime_ms: _Optional[int] = ..., memory_usage_bytes: _Optional[int] = ..., cpu_usage_percent: _Optional[float] = ..., active_sessions: _Optional[int] = ...) -> None: ...
