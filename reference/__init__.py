"""snakepit_bridge: the reference bridges and the adapter API custom adapters import.

Write an adapter by subclassing :class:`BaseCommandHandler` and registering
commands in ``_register_commands()``; serve it with
``ProtocolHandler(MyAdapter()).run()`` or
``snakepit-generic-bridge-v2 --adapter my_module.MyAdapter``.  See
docs/adapters.md.
"""

from __future__ import annotations

from .adapter import (
    BadRequestError,
    BaseCommandHandler,
    CommandError,
    ForbiddenError,
    NotFoundError,
    SerializationError,
    StoreFullError,
    UnknownCommandError,
)
from .generic import GenericCommandHandler
from .protocol import ProtocolHandler

__all__ = [
    "BadRequestError",
    "BaseCommandHandler",
    "CommandError",
    "ForbiddenError",
    "GenericCommandHandler",
    "NotFoundError",
    "ProtocolHandler",
    "SerializationError",
    "StoreFullError",
    "UnknownCommandError",
]
