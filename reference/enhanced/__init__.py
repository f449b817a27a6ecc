"""snakepit_bridge.enhanced: the enhanced reference adapter (PROTOCOL §7).

Safe dynamic invocation of allowlisted Python (``call``, ``pipeline``,
``inspect``), a per-session object store, §7.7 result shapes and framework
plugins (pandas, numpy, DSPy, Transformers).  Serve it with
``snakepit-enhanced-bridge`` or ``python -m snakepit_bridge.enhanced_bridge``;
see docs/enhanced.md.
"""

from __future__ import annotations

from .handler import ENHANCED_COMMANDS, MAX_PIPELINE_STEPS, EnhancedCommandHandler
from .plugins import PLUGINS, Plugin, available_frameworks
from .rules import (
    DEFAULT_ALLOWED_MODULES,
    DEFAULT_DENYLIST,
    OPTIONAL_ALLOWED_MODULES,
    default_allowed_modules,
)
from .safety import SafetyPolicy
from .serialize import DEFAULT_LIMITS, SerializationLimits, Serializer
from .spawn_guard import SpawnGuard
from .store import DEFAULT_MAX_STORED, ObjectStore

__all__ = [
    "DEFAULT_ALLOWED_MODULES",
    "DEFAULT_DENYLIST",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_STORED",
    "ENHANCED_COMMANDS",
    "MAX_PIPELINE_STEPS",
    "OPTIONAL_ALLOWED_MODULES",
    "PLUGINS",
    "EnhancedCommandHandler",
    "ObjectStore",
    "Plugin",
    "SafetyPolicy",
    "SerializationLimits",
    "Serializer",
    "SpawnGuard",
    "available_frameworks",
    "default_allowed_modules",
]
