"""Every fixed fact of the protocol, named once (docs/PROTOCOL.md gives the reasons).

Sections are cited beside each constant so that a reader can check the value
against the spec, and a change of the spec is a change of one line here.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "CODEC_MODES",
    "CODEC_NAMES",
    "ENHANCED_COMMANDS",
    "ERLANG_TERM_TAG",
    "ERROR_TYPES",
    "GRPC_PROFILES",
    "GRPC_READY_LIMIT",
    "GRPC_SIGTERM_LIMIT",
    "HEALTH_INTERVAL",
    "HOST_COMMAND_TIMEOUT",
    "NEGOTIATE",
    "NEGOTIATION_TIMEOUT",
    "PROFILES",
    "PROFILE_TRANSPORTS",
    "READY_PREFIX",
    "SHUTDOWN_GRACE",
    "STARTUP_LIMIT",
    "STARTUP_RECOMMENDED",
    "STDIO_EXIT_LIMIT",
    "STDIO_PROFILES",
    "TRANSPORTS",
    "ExitCode",
]

# The profiles a bridge may claim (PROTOCOL.md, the table at the top).
PROFILES: Final = ("v1", "v2", "enhanced", "grpc", "bridge-service")
# The transport each profile is spoken over: stdio frames (§2-§7), the
# SnakepitBridge gRPC service (§8), or the BridgeService worker with its host
# callbacks (§9).
PROFILE_TRANSPORTS: Final = {
    "v1": "stdio",
    "v2": "stdio",
    "enhanced": "stdio",
    "grpc": "grpc",
    "bridge-service": "bridge-service",
}
TRANSPORTS: Final = ("stdio", "grpc", "bridge-service")
# Those spoken over stdin/stdout with length-prefixed frames (§2-§7).
STDIO_PROFILES: Final = ("v1", "v2", "enhanced")
# Those spoken over gRPC (§8 and §9).
GRPC_PROFILES: Final = ("grpc", "bridge-service")

# Payload codecs (§3) and the ways a host can pick one: from the first frame
# (the bridge was started with --protocol), or by the §3.4 handshake.
CODEC_NAMES: Final = ("json", "msgpack")
NEGOTIATE: Final = "negotiate"
CODEC_MODES: Final = (*CODEC_NAMES, NEGOTIATE)

# §4.2: the machine-readable error_type vocabulary.
ERROR_TYPES: Final = frozenset(
    {
        "bad_request",
        "decode_error",
        "frame_too_large",
        "unknown_command",
        "handler_error",
        "serialization_error",
        "forbidden",
        "not_found",
        "store_full",
    }
)

# §7.1-§7.5: what an enhanced bridge answers besides the generic commands (§6).
ENHANCED_COMMANDS: Final = (
    "call",
    "store",
    "retrieve",
    "list_stored",
    "delete_stored",
    "clear_session",
    "pipeline",
    "inspect",
)

# §1, §3.5: Snakepit rejects a response payload that starts with this byte
# (the Erlang external term format's version tag).
ERLANG_TERM_TAG: Final = 0x83

# -- time limits, in seconds ---------------------------------------------------

# §5.1: the first answer MUST come within 20 s of the start, SHOULD within 2 s.
STARTUP_LIMIT: Final = 20.0
STARTUP_RECOMMENDED: Final = 2.0
# §1, §3.4: how long Snakepit waits for the negotiation answer.
NEGOTIATION_TIMEOUT: Final = 5.0
# §1: a health ping every 30 s; a command may take 30 s by default.
HEALTH_INTERVAL: Final = 30.0
HOST_COMMAND_TIMEOUT: Final = 30.0
# §1: on shutdown Snakepit sends SIGTERM, waits this long, then SIGKILL.
SHUTDOWN_GRACE: Final = 2.0
# §2.5, §5.3, §5.4: a stdio bridge MUST exit within 2 s of end of input, of
# SIGTERM/SIGINT, or of a broken stdout.
STDIO_EXIT_LIMIT: Final = 2.0
# §8.2: the ready line MUST come within 10 s; §8.10: SIGTERM exit within 5 s.
GRPC_READY_LIMIT: Final = 10.0
GRPC_SIGTERM_LIMIT: Final = 5.0

# §8.2: the one stdout line a gRPC bridge prints once it serves.
READY_PREFIX: Final = "GRPC_SERVER_READY_ON_PORT="


class ExitCode(enum.IntEnum):
    """The harness's exit statuses, the same for every subcommand (docs/PROTOCOL.md, appendix A)."""

    OK = 0  # the bridge conforms / the command succeeded
    FAILED = 1  # the bridge failed a check, or misbehaved
    ERROR = 2  # the harness could not do its job (usage, missing extra, nothing selected)
    LIMIT_BREACHED = 3  # a load-test gate (--max-p99, --min-rps, ...) was breached
    INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
