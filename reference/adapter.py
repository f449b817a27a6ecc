"""The adapter API: a command table and the errors a command may raise.

An *adapter* is a subclass of :class:`BaseCommandHandler` that registers its
commands in ``_register_commands()``.  A command is a plain function taking the
request's ``args`` (a dict) and returning any value the codec can carry; the
protocol loop (:mod:`snakepit_bridge.protocol`) wraps it into a response.

Failures are exceptions.  Raising a :class:`CommandError` subclass gives a
``success: false`` response whose ``error_type`` is the class's ``error_type``
(PROTOCOL §4.2); any other exception is reported as ``handler_error`` with the
exception's class name and traceback (§4.5).  Nothing here does I/O.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any, ClassVar

__all__ = [
    "BadRequestError",
    "BaseCommandHandler",
    "CommandError",
    "CommandFunction",
    "ForbiddenError",
    "NotFoundError",
    "SerializationError",
    "StoreFullError",
    "UnknownCommandError",
    "utc_timestamp",
]

CommandFunction = Callable[[dict[str, Any]], Any]


class CommandError(Exception):
    """A command failed in a way it can explain; ``error_type`` goes on the wire."""

    error_type: ClassVar[str] = "handler_error"


class BadRequestError(CommandError):
    """The request's arguments are wrong (missing, of the wrong type, out of range)."""

    error_type = "bad_request"


class UnknownCommandError(CommandError):
    """No command of that name is registered."""

    error_type = "unknown_command"


class ForbiddenError(CommandError):
    """The request asks for something the bridge refuses on principle (§7.2)."""

    error_type = "forbidden"


class NotFoundError(CommandError):
    """The request names something that does not exist (a stored id, ...)."""

    error_type = "not_found"


class StoreFullError(CommandError):
    """A store reached its cap (§7.3)."""

    error_type = "store_full"


class SerializationError(CommandError):
    """The result cannot be carried by the codec in use (§4.6)."""

    error_type = "serialization_error"


# Formatting a timestamp with datetime costs a few microseconds per response,
# a fifth of a pipe round trip here.  Millisecond resolution is what ISO 8601
# timestamps in logs usually carry, and it lets the text be reused by every
# response within the same millisecond (dozens under load); the date-and-time
# prefix changes once a second.
_ts_millis = -1
_ts_text = ""
_ts_second = -1
_ts_prefix = ""


def utc_timestamp() -> str:
    """The current time as ISO 8601 UTC with milliseconds and a ``Z`` (§4.2)."""
    global _ts_millis, _ts_text, _ts_second, _ts_prefix
    millis = int(time.time() * 1000)
    if millis != _ts_millis:
        second, milli = divmod(millis, 1000)
        if second != _ts_second:
            _ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            _ts_second = second
        _ts_text = f"{_ts_prefix}.{milli:03d}Z"
        _ts_millis = millis
    return _ts_text


class BaseCommandHandler:
    """A table of named commands plus the built-in ``ping`` and ``info``.

    Subclass it, override ``_register_commands()`` and call
    ``register_command(name, fn)`` there.  Registering a built-in's name
    replaces the built-in.  ``process_command()`` is what the protocol loop
    calls for every well-formed request.
    """

    bridge_type: ClassVar[str] = "custom"
    bridge_name: ClassVar[str] = "snakepit-custom-bridge"
    bridge_version: ClassVar[str] = "1.0.0"

    def __init__(self) -> None:
        self._commands: dict[str, CommandFunction] = {}
        self.requests_handled = 0
        self.started_at = time.monotonic()
        self.register_command("ping", self.ping_result)
        self.register_command("info", self.info_result)
        self._register_commands()

    def _register_commands(self) -> None:
        """Register the adapter's commands; the base class has none beyond the built-ins."""

    def register_command(self, name: str, fn: CommandFunction) -> None:
        """Make ``fn(args)`` answer requests whose ``command`` is ``name``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a command name must be a non-empty string, not {name!r}")
        if not callable(fn):
            raise TypeError(f"command {name!r}: {fn!r} is not callable")
        self._commands[name] = fn

    def get_supported_commands(self) -> list[str]:
        """Every command name this handler answers, sorted."""
        return sorted(self._commands)

    def process_command(self, command: str, args: dict[str, Any]) -> Any:
        """Run ``command`` with ``args`` and return its result (exceptions propagate)."""
        self.requests_handled += 1
        fn = self._commands.get(command)
        if fn is None:
            raise UnknownCommandError(
                f"unknown command {command!r}; supported: "
                + ", ".join(self.get_supported_commands())
            )
        return fn(args)

    # -- built-in commands ------------------------------------------------------

    def ping_result(self, args: dict[str, Any]) -> dict[str, Any]:
        """``ping`` (§6.1): liveness plus counters; ``worker_id`` echoed when given."""
        result: dict[str, Any] = {
            "status": "ok",
            "bridge_type": self.bridge_type,
            "uptime": time.monotonic() - self.started_at,
            "requests_handled": self.requests_handled,
        }
        if "worker_id" in args:
            result["worker_id"] = args["worker_id"]
        return result

    def info_result(self, args: dict[str, Any]) -> dict[str, Any]:
        """``info`` (§6.4): who this bridge is and what it answers."""
        return {
            "status": "ok",
            "bridge_info": {
                "name": self.bridge_name,
                "version": self.bridge_version,
                "bridge_type": self.bridge_type,
                "supported_commands": self.get_supported_commands(),
            },
            "system_info": {
                "python_version": platform.python_version(),
                "python_implementation": platform.python_implementation(),
                "platform": sys.platform,
                "machine": platform.machine(),
                "pid": os.getpid(),
                "uptime": time.monotonic() - self.started_at,
                "requests_handled": self.requests_handled,
            },
        }
