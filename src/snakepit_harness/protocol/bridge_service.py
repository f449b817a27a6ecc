"""The bridge-service profile's facts (PROTOCOL.md §9, Snakepit v0.13's ``BridgeService``).

No I/O, like the rest of the protocol core: values inside ``google.protobuf.Any``
(Any-JSON), the tool-error JSON, how Snakepit launches a worker (flags,
environment, ready file, heartbeat configuration), the time limits, and the
tools a worker registers with the example calls made of them.  The modules
behind it are private; import from here.
"""

from __future__ import annotations

from ._bridge_service import (
    BRIDGE_HOST_WAIT_LIMIT,
    BRIDGE_LOG_LEVEL,
    BRIDGE_READY_LIMIT,
    BRIDGE_SERVICE,
    BRIDGE_SIGTERM_LIMIT,
    PARAMETER_TYPE_URL,
    AnyJsonError,
    BridgeEnv,
    BridgeFlag,
    HeartbeatConfig,
    decode_any_json,
    encode_parameter,
    encode_tool_result,
    launch_argv,
    parse_ready_file,
    result_type_problem,
    tool_error_json,
    tool_error_problems,
)
from ._bridge_tools import (
    NO_EXAMPLE,
    ParamInfo,
    ToolCallsError,
    ToolInfo,
    example_arguments,
    example_value,
    parse_tool_calls,
    tool_calls_for,
)

__all__ = [
    "BRIDGE_HOST_WAIT_LIMIT",
    "BRIDGE_LOG_LEVEL",
    "BRIDGE_READY_LIMIT",
    "BRIDGE_SERVICE",
    "BRIDGE_SIGTERM_LIMIT",
    "NO_EXAMPLE",
    "PARAMETER_TYPE_URL",
    "AnyJsonError",
    "BridgeEnv",
    "BridgeFlag",
    "HeartbeatConfig",
    "ParamInfo",
    "ToolCallsError",
    "ToolInfo",
    "decode_any_json",
    "encode_parameter",
    "encode_tool_result",
    "example_arguments",
    "example_value",
    "launch_argv",
    "parse_ready_file",
    "parse_tool_calls",
    "result_type_problem",
    "tool_calls_for",
    "tool_error_json",
    "tool_error_problems",
]
