"""Transport drivers: how the suite reaches a bridge, one module per transport.

A driver hands each case a context with its bridge ready as the case asks
(``BridgeUse``: the long-lived shared bridge, a fresh one through start-up, or
a raw one as spawned), takes it back with the case's verdict (a verdict that
poisons the bridge replaces it), and kills everything on :meth:`close`.

Drivers are found through ``_DRIVER_MODULES``, imported on first use: the gRPC
ones need the ``grpc`` extra, and a missing extra is an error that names it.
Third-party transports register themselves with :func:`register_transport`.
"""

from __future__ import annotations

import importlib
import threading
from abc import ABC, abstractmethod
from typing import ClassVar, Final

from snakepit_harness.errors import HarnessError

from ..context import CaseContext
from ..model import Case, RunSettings, Verdict

__all__ = ["TransportDriver", "register_transport", "transport_driver"]


class TransportDriver(ABC):
    """Supplies case contexts for one transport kind and cleans up after them."""

    kind: ClassVar[str] = ""

    def __init__(self, settings: RunSettings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        # What start-up negotiated (stdio, --codec negotiate), for the report.
        self.negotiated: str | None = None

    @abstractmethod
    def acquire(self, case: Case, deadline: float) -> CaseContext:
        """A context for ``case``, with its bridge ready as ``case.bridge`` asks."""

    @abstractmethod
    def release(self, ctx: CaseContext, verdict: Verdict) -> None:
        """After the case: keep or kill its bridge."""

    @abstractmethod
    def close(self) -> None:
        """End of run (or interruption): nothing may be left running."""

    def stderr_tail(self, ctx: CaseContext) -> bytes:
        return b""

    def unread_stdout(self, ctx: CaseContext) -> bytes:
        return b""

    def reproduction(self, ctx: CaseContext) -> list[str]:
        return []


# transport kind -> (module defining its driver as ``DRIVER``, the extra it needs).
_DRIVER_MODULES: Final[dict[str, tuple[str, str | None]]] = {
    "stdio": (f"{__name__}.stdio", None),
    "grpc": (f"{__name__}.grpc", "grpc"),
    "bridge-service": (f"{__name__}.bridge_service", "grpc"),
}

_REGISTERED: dict[str, type[TransportDriver]] = {}


def register_transport(kind: str, driver: type[TransportDriver]) -> None:
    """Make ``--transport kind`` available (for transports outside this package)."""
    _REGISTERED[kind] = driver


def transport_driver(kind: str) -> type[TransportDriver]:
    """The driver class for ``kind``; a clear error when it is unknown or its extra is missing."""
    if kind in _REGISTERED:
        return _REGISTERED[kind]
    if kind not in _DRIVER_MODULES:
        known = ", ".join(sorted({*_DRIVER_MODULES, *_REGISTERED}))
        raise HarnessError(f"unknown transport {kind!r}; known: {known}")
    module_name, extra = _DRIVER_MODULES[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name == module_name:
            raise HarnessError(f"the {kind} transport is not part of this installation") from exc
        if extra is None:
            raise
        raise HarnessError(
            f"the {kind} transport needs the {extra!r} extra "
            f"(pip install 'snakepit-harness[{extra}]'): {exc}"
        ) from exc
    driver: type[TransportDriver] = module.DRIVER
    _REGISTERED[kind] = driver
    return driver
