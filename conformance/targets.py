"""What ``snakepit-harness check`` runs with no bridge named: the bundled reference bridges.

One row per (reference bridge, profile, codec mode) it claims.  Other parts
of the project add their rows with :func:`register_check_target` (or by
extending ``CHECK_TARGETS`` here).  A row whose bridge module is not
importable (an optional extra missing) is reported as skipped, not failed.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["CHECK_TARGETS", "CheckTarget", "register_check_target", "user_targets"]


@dataclass(frozen=True)
class CheckTarget:
    """One configuration ``check`` runs."""

    profile: str
    codec: str  # codec mode (json, msgpack, negotiate); "-" for non-stdio transports
    script: str  # console script of the bridge
    module: str  # module whose main() starts it (fallback when the script is not found)
    args: tuple[str, ...] = ()
    transport: str = "stdio"
    needs: tuple[str, ...] = ()  # modules that must be importable (optional extras)

    @property
    def name(self) -> str:
        return f"{self.script} {self.profile}/{self.codec}"

    def missing(self) -> str | None:
        """Why this row cannot run here, or None."""
        for module in (self.module, *self.needs):
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return f"module {module} is not installed"
        return None

    def command(self) -> tuple[str, ...]:
        """The bridge's command line: its console script beside this Python, else -c."""
        beside = Path(sys.executable).parent / self.script
        if beside.exists():
            return (str(beside), *self.args)
        found = shutil.which(self.script)
        if found:
            return (found, *self.args)
        code = f"import sys; from {self.module} import main; sys.exit(main())"
        return (sys.executable, "-c", code, *self.args)


# --quiet keeps the bridges' informational lines out of failure reports.
CHECK_TARGETS: Final[list[CheckTarget]] = [
    CheckTarget(
        "v1", "json", "snakepit-generic-bridge", "snakepit_bridge.generic_bridge", ("--quiet",)
    ),
    CheckTarget(
        "v2",
        "json",
        "snakepit-generic-bridge-v2",
        "snakepit_bridge.generic_bridge_v2",
        ("--protocol", "json", "--quiet"),
    ),
    CheckTarget(
        "v2",
        "msgpack",
        "snakepit-generic-bridge-v2",
        "snakepit_bridge.generic_bridge_v2",
        ("--protocol", "msgpack", "--quiet"),
        needs=("msgpack",),
    ),
    CheckTarget(
        "v2",
        "negotiate",
        "snakepit-generic-bridge-v2",
        "snakepit_bridge.generic_bridge_v2",
        ("--protocol", "auto", "--quiet"),
        needs=("msgpack",),
    ),
    CheckTarget(
        "enhanced",
        "json",
        "snakepit-enhanced-bridge",
        "snakepit_bridge.enhanced_bridge",
        ("--protocol", "json", "--quiet"),
    ),
    CheckTarget(
        "enhanced",
        "msgpack",
        "snakepit-enhanced-bridge",
        "snakepit_bridge.enhanced_bridge",
        ("--protocol", "msgpack", "--quiet"),
        needs=("msgpack",),
    ),
    CheckTarget(
        "enhanced",
        "negotiate",
        "snakepit-enhanced-bridge",
        "snakepit_bridge.enhanced_bridge",
        ("--protocol", "auto", "--quiet"),
        needs=("msgpack",),
    ),
    # The enhanced bridge is a v2 bridge too, but no separate v2 rows are
    # needed: every v2 case (§2-§6) also belongs to the enhanced profile, so
    # the enhanced rows above already run them against it.
    CheckTarget(
        "grpc",
        "-",
        "snakepit-grpc-bridge",
        "snakepit_bridge.grpc_bridge",
        (),
        transport="grpc",
        needs=("grpc",),
    ),
    CheckTarget(
        "bridge-service",
        "-",
        "snakepit-bridge-worker",
        "snakepit_bridge.bridge_service",
        (),
        transport="bridge-service",
        needs=("grpc",),
    ),
]


def register_check_target(target: CheckTarget) -> None:
    """Add a row to ``check`` (idempotent)."""
    if target not in CHECK_TARGETS:
        CHECK_TARGETS.append(target)


# Codec modes ``check -- CMD`` runs per profile: JSON (which every bridge
# speaks from its first frame in auto mode) and negotiation.  MessagePack from
# the first frame needs the bridge's own flag, so it is opt-in (--codec).
USER_CODECS: Final[dict[str, tuple[str, ...]]] = {
    "v1": ("json",),
    "v2": ("json", "negotiate"),
    "enhanced": ("json", "negotiate"),
    "grpc": ("-",),
    "bridge-service": ("-",),
}


def user_targets(profile: str, codecs: tuple[str, ...]) -> list[tuple[str, str]]:
    """(profile, codec) pairs ``check -- CMD`` runs."""
    return [(profile, c) for c in (codecs or USER_CODECS.get(profile, ("json",)))]
