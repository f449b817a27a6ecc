"""Facts of the bridge-service profile (PROTOCOL.md §9), without any I/O.

Snakepit v0.13 runs its Python workers over the ``snakepit.bridge.BridgeService``
gRPC service.  Everything here is data or a pure function over bytes and
strings, so the harness (host emulator, launcher, cases, fuzz, load) and the
reference worker read one text of the rules: how a value travels inside a
``google.protobuf.Any`` (JSON text in ``Any.value``, §9.7), what a tool error
looks like (§9.6), how Snakepit starts a worker (flags and environment,
§9.2), the ready file (§9.3) and the time limits.  ``protobuf`` is not
imported: callers move ``(type_url, value)`` pairs in and out of their
messages.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from ..errors import RemoteProtocolError
from ._codecs import StrictJson, UnencodableValue

__all__ = [
    "BRIDGE_HOST_WAIT_LIMIT",
    "BRIDGE_LOG_LEVEL",
    "BRIDGE_READY_LIMIT",
    "BRIDGE_SERVICE",
    "BRIDGE_SIGTERM_LIMIT",
    "PARAMETER_TYPE_URL",
    "AnyJsonError",
    "BridgeEnv",
    "BridgeFlag",
    "HeartbeatConfig",
    "decode_any_json",
    "encode_parameter",
    "encode_tool_result",
    "launch_argv",
    "parse_ready_file",
    "result_type_problem",
    "tool_error_json",
    "tool_error_problems",
]

# §9.1: the one service both sides serve.
BRIDGE_SERVICE: Final = "snakepit.bridge.BridgeService"

# -- time limits, in seconds ---------------------------------------------------

# §9.3: Snakepit waits this long for the ready file (grpc_server_ready_timeout).
BRIDGE_READY_LIMIT: Final = 30.0
# §9.12: on shutdown Snakepit sends SIGTERM and waits graceful_shutdown_timeout_ms
# (6 s) before SIGKILL.
BRIDGE_SIGTERM_LIMIT: Final = 6.0
# §9.3: a worker that cannot reach its host SHOULD give up within the time
# Snakepit waits for it anyway (after that it is killed, not told).
BRIDGE_HOST_WAIT_LIMIT: Final = BRIDGE_READY_LIMIT

# -- values inside google.protobuf.Any (§9.7) -----------------------------------

# What Snakepit's host puts on every parameter: the StringValue type URL, with
# the JSON text itself (not a packed StringValue message) as the value.
PARAMETER_TYPE_URL: Final = "type.googleapis.com/google.protobuf.StringValue"
# Results: type.googleapis.com/snakepit.<kind>, the value again JSON text.
RESULT_TYPE_PREFIX: Final = "type.googleapis.com/snakepit."
# A JSON value's kind, by Python type; bool before int (bool is an int).
_KINDS: Final[tuple[tuple[type, str], ...]] = (
    (bool, "boolean"),
    (dict, "map"),
    (list, "list"),
    (str, "string"),
    (int, "integer"),
    (float, "float"),
)
# Kinds a result's type URL may name for a decoded JSON value.  A number may
# be called float (upstream's worker calls every number float) or integer.
_ACCEPTED_KINDS: Final[dict[str, frozenset[str]]] = {
    "boolean": frozenset({"boolean", "bool"}),
    "map": frozenset({"map", "dict", "object"}),
    "list": frozenset({"list", "array"}),
    "string": frozenset({"string", "str"}),
    "integer": frozenset({"integer", "int", "float", "number"}),
    "float": frozenset({"float", "number", "double"}),
    "null": frozenset({"null", "none", "nil"}),
}

_UTF8_JSON = StrictJson(ascii=False)


class AnyJsonError(RemoteProtocolError):
    """An ``Any`` whose value is not strict UTF-8 JSON text (§9.7)."""


def _json_bytes(value: Any) -> bytes:
    try:
        return _UTF8_JSON.dumps(value).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise UnencodableValue(f"cannot send {type(value).__name__} as JSON: {exc}") from None


def encode_parameter(value: Any) -> tuple[str, bytes]:
    """One parameter as the host sends it: ``(PARAMETER_TYPE_URL, JSON text)``."""
    return PARAMETER_TYPE_URL, _json_bytes(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    for python_type, kind in _KINDS:
        if isinstance(value, python_type):
            return kind
    return "string"  # never reached for JSON values


def encode_tool_result(value: Any) -> tuple[str, bytes]:
    """A tool's JSON result: ``(type.googleapis.com/snakepit.<kind>, JSON text)``."""
    encoded = _json_bytes(value)
    return RESULT_TYPE_PREFIX + _kind(value), encoded


def decode_any_json(value: bytes) -> Any:
    """The JSON value in an ``Any.value`` (any type URL); :class:`AnyJsonError` if none."""
    try:
        return _UTF8_JSON.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise AnyJsonError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise AnyJsonError("JSON nested too deeply") from None
    except ValueError as exc:
        raise AnyJsonError(f"not strict JSON: {exc}") from None


def result_type_problem(type_url: str, value: Any) -> str | None:
    """What is wrong with a result's type URL for its decoded JSON ``value`` (§9.5)."""
    if not type_url.startswith(RESULT_TYPE_PREFIX):
        return f"type URL {type_url!r} does not start with {RESULT_TYPE_PREFIX!r}"
    named = type_url[len(RESULT_TYPE_PREFIX) :].lower()
    kind = _kind(value)
    if named not in _ACCEPTED_KINDS[kind]:
        return f"type URL {type_url!r} names {named!r} for a JSON {kind}"
    return None


# -- tool errors (§9.6) --------------------------------------------------------

# The error JSON object: required keys and their types, then optional ones.
ERROR_REQUIRED: Final[dict[str, type]] = {"type": str, "message": str}
ERROR_OPTIONAL: Final[dict[str, type]] = {
    "stacktrace": list,
    "traceback": str,
    "context": dict,
}


def tool_error_json(
    error_type: str,
    message: str,
    *,
    stacktrace: Sequence[str] = (),
    context: Mapping[str, Any] | None = None,
) -> str:
    """The ``error_message`` text of a failed tool call (§9.6)."""
    payload: dict[str, Any] = {
        "type": error_type,
        "message": message,
        "stacktrace": list(stacktrace),
        "traceback": "".join(stacktrace),
        "context": dict(context or {}),
    }
    try:
        return _UTF8_JSON.dumps(payload)
    except (TypeError, ValueError):
        payload["context"] = {key: repr(value) for key, value in payload["context"].items()}
        return _UTF8_JSON.dumps(payload)


def tool_error_problems(error_message: str) -> list[str]:
    """What keeps ``error_message`` from being §9.6's error JSON object, in words."""
    try:
        payload = _UTF8_JSON.loads(error_message)
    except (ValueError, RecursionError):
        return [f"error_message is not JSON: {error_message[:120]!r}"]
    if not isinstance(payload, dict):
        return [f"error_message is JSON {type(payload).__name__}, not an object"]
    problems = []
    for key, wanted in ERROR_REQUIRED.items():
        if not isinstance(payload.get(key), wanted):
            problems.append(f"no {wanted.__name__} {key!r} in the error object")
    for key, wanted in ERROR_OPTIONAL.items():
        if key in payload and not isinstance(payload[key], wanted):
            problems.append(f"{key!r} is {type(payload[key]).__name__}, not {wanted.__name__}")
    return problems


# -- launching a worker (§9.2) ---------------------------------------------------


class BridgeFlag(enum.StrEnum):
    """Command-line options Snakepit gives a worker (and the heartbeat overrides)."""

    PORT = "--port"
    ELIXIR_ADDRESS = "--elixir-address"
    RUN_ID = "--snakepit-run-id"
    ADAPTER = "--adapter"
    HEARTBEAT_ENABLED = "--heartbeat-enabled"
    HEARTBEAT_INTERVAL_MS = "--heartbeat-interval-ms"
    HEARTBEAT_TIMEOUT_MS = "--heartbeat-timeout-ms"
    HEARTBEAT_MAX_MISSED = "--heartbeat-max-missed"
    HEARTBEAT_INITIAL_DELAY_MS = "--heartbeat-initial-delay-ms"
    HEARTBEAT_DEPENDENT = "--heartbeat-dependent"
    HEARTBEAT_INDEPENDENT = "--heartbeat-independent"


class BridgeEnv(enum.StrEnum):
    """Environment variables Snakepit sets for a worker."""

    READY_FILE = "SNAKEPIT_READY_FILE"  # where the worker writes its port
    PROCESS_GROUP = "SNAKEPIT_PROCESS_GROUP"  # "1": the host kills by process group
    LOG_LEVEL = "SNAKEPIT_LOG_LEVEL"  # debug | info | warning | error | none
    HEARTBEAT_CONFIG = "SNAKEPIT_HEARTBEAT_CONFIG"  # JSON object, see HeartbeatConfig
    PYTHON = "SNAKEPIT_PYTHON"  # the interpreter Snakepit chose
    # Read by upstream's worker when --elixir-address is absent.
    GRPC_ADDRESS = "SNAKEPIT_GRPC_ADDRESS"


# Snakepit's default log level for workers (:error).
BRIDGE_LOG_LEVEL: Final = "error"


def launch_argv(argv: Sequence[str], *, host_address: str, run_id: str) -> list[str]:
    """``argv`` with the flags Snakepit appends (§9.2).

    As Snakepit does: ``--port 0`` and ``--elixir-address`` only when no
    argument already mentions them, ``--snakepit-run-id`` always.
    """
    launched = list(argv)
    for flag, value in ((BridgeFlag.PORT, "0"), (BridgeFlag.ELIXIR_ADDRESS, host_address)):
        if not any(flag.value in arg for arg in launched):
            launched += [flag.value, value]
    return [*launched, BridgeFlag.RUN_ID.value, run_id]


_LEADING_INTEGER: Final = re.compile(r"^[+-]?\d+")


def parse_ready_file(text: str) -> int | None:
    """The port a ready file names, read as Snakepit reads it; None: not (yet) a port.

    Snakepit trims the text and takes its leading integer, so ``"50123\\n"``
    is port 50123 and an empty (half-written) file means "not yet".
    """
    match = _LEADING_INTEGER.match(text.strip())
    if match is None:
        return None
    port = int(match.group())
    return port if 0 < port < 65536 else None


@dataclass(frozen=True)
class HeartbeatConfig:
    """``SNAKEPIT_HEARTBEAT_CONFIG``: the worker's heartbeats to its host (§9.13).

    Defaults are Snakepit's.  ``dependent``: the worker ends itself after
    ``max_missed_heartbeats`` failed heartbeats in a row.
    """

    enabled: bool = True
    interval_ms: int = 2_000
    timeout_ms: int = 10_000
    max_missed_heartbeats: int = 3
    initial_delay_ms: int = 0
    dependent: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> HeartbeatConfig:
        """Read a config object; unknown keys are ignored, bad values keep the default.

        Keys may be snake_case or camelCase, and ``ping_interval_ms`` (the
        host's own name) is read as ``interval_ms``.
        """
        data = asdict(cls())
        for raw_key, value in (options or {}).items():
            key = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), str(raw_key))
            key = "interval_ms" if key == "ping_interval_ms" else key
            if key not in data:
                continue
            default = data[key]
            if isinstance(default, bool):
                data[key] = (
                    value.strip().lower() in ("1", "true", "yes", "on")
                    if isinstance(value, str)
                    else bool(value)
                )
            else:
                try:
                    number = int(value)
                except (TypeError, ValueError):
                    continue
                data[key] = number if number >= 0 else default
        return cls(**data)

    @classmethod
    def from_json(cls, text: str | None) -> HeartbeatConfig | None:
        """Parse the environment variable; None when unset or not a JSON object."""
        if not text:
            return None
        try:
            options = json.loads(text)
        except ValueError:
            return None
        return cls.from_mapping(options) if isinstance(options, dict) else None

    def host_loss_limit(self) -> float:
        """Seconds within which a dependent worker must be gone after its host is (§9.13)."""
        per_beat = (self.interval_ms + self.timeout_ms) / 1000.0
        return (
            self.initial_delay_ms / 1000.0
            + self.max_missed_heartbeats * per_beat
            + (BRIDGE_SIGTERM_LIMIT)
        )
