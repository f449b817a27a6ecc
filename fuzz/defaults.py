"""Defaults of a fuzz run, importable without hypothesis (the CLI's ``--help`` reads them)."""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_MAX_EXAMPLES",
    "DEFAULT_RESPONSE_TIMEOUT",
    "PROPERTY_NAMES",
    "SHRINK_BUDGET",
]

# Examples per property when nothing else is said: enough to meet each
# strategy's edge cases many times over (the planted defects in
# tests/fuzz_bridges are caught in far fewer), small enough that a run over
# all properties of a profile takes about a minute.
DEFAULT_MAX_EXAMPLES: Final = 200

# A hung bridge is reported once no response arrives for this long; generous
# against a loaded CI machine, short enough to keep a fuzz run moving.
DEFAULT_RESPONSE_TIMEOUT: Final = 5.0

# Seconds spent shrinking a failure before the best example so far is taken:
# a hanging bridge costs a full response timeout per attempt.
SHRINK_BUDGET: Final = 60.0

# Every property and state machine, in run order (tests check this against the registries).
PROPERTY_NAMES: Final = (
    "responses",
    "echo",
    "compute",
    "invalid-frames",
    "split-writes",
    "pipelined-session",
    "store-model",
    "grpc-sessions",
)
