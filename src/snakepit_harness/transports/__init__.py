"""Transports: the only code in the harness that touches processes and sockets."""

from __future__ import annotations

from .process import BridgeExit, describe_returncode
from .stdio import (
    DEFAULT_READ_MAX_FRAME,
    PIPE_SIZE,
    STDERR_TAIL_BYTES,
    StdioBridge,
    set_pipe_size,
)

__all__ = [
    "DEFAULT_READ_MAX_FRAME",
    "PIPE_SIZE",
    "STDERR_TAIL_BYTES",
    "BridgeExit",
    "StdioBridge",
    "describe_returncode",
    "set_pipe_size",
]
