"""What the gRPC and bridge-service drivers have in common.

Both keep one long-lived bridge (a process, or a ``--target`` connection) for
``shared`` cases, replaced when it died or after a verdict that poisons it,
and both need a command or ``--target`` to run at all.
:class:`SharedBridgeDriver` holds that shared bridge under its lock; a driver
says how to make one and when one is dead.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

from snakepit_harness.errors import HarnessError

from ..model import RunSettings
from . import TransportDriver

__all__ = ["EVENT_TEXT", "SharedBridgeDriver", "short"]

# Characters of a value shown per recorded event.
EVENT_TEXT: Final = 300


def short(value: Any) -> str:
    """``repr(value)``, cut to :data:`EVENT_TEXT` characters for a case's events."""
    text = repr(value)
    return text if len(text) <= EVENT_TEXT else text[:EVENT_TEXT] + f"... ({len(text)} chars)"


class _Closable(Protocol):
    def close(self) -> None: ...


B = TypeVar("B", bound=_Closable)
T = TypeVar("T")


class SharedBridgeDriver(TransportDriver, Generic[B]):
    """A driver with one shared bridge ``B`` (anything with ``close()``) kept under a lock."""

    # The error when neither a bridge command nor --target was given.
    no_bridge: ClassVar[str] = ""

    def __init__(self, settings: RunSettings, stop: threading.Event | None = None) -> None:
        super().__init__(settings, stop)
        if not settings.bridge_cmd and not settings.target:
            raise HarnessError(self.no_bridge)
        self._shared: B | None = None
        self._lock = threading.Lock()

    def _shared_bridge(self, dead: Callable[[B], bool], make: Callable[[], B]) -> B:
        """The shared bridge, made anew (by ``make``) when there is none or ``dead`` says so."""
        with self._lock:
            if self._shared is None or dead(self._shared):
                self._discard_shared()
                self._shared = make()
            return self._shared

    def _poisoned(self, bridge: object) -> None:
        """A verdict poisoned ``bridge``: if it is still the shared one, close it."""
        with self._lock:
            if self._shared is bridge:
                self._discard_shared()

    def _discard_shared(self) -> None:
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    def _close_shared(self) -> None:
        with self._lock:
            self._discard_shared()

    def _started(self, what: str, start: Callable[[], T], close: Callable[[], None]) -> T:
        """``start()``; on any failure ``close()`` first, an OSError as a HarnessError."""
        try:
            return start()
        except OSError as exc:
            close()
            raise HarnessError(
                f"cannot start the {what} {shlex.join(self.settings.bridge_cmd)}: {exc}"
            ) from exc
        except BaseException:
            close()
            raise

    def _where(self) -> str:
        """The bridge part of a reproduction command line."""
        if self.settings.bridge_cmd:
            return f"-- {shlex.join(self.settings.bridge_cmd)}"
        return f"--target {self.settings.target}"
