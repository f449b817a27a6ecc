"""What a tool sees of its call: the session, the time left, and the host's own tools.

A :class:`SessionContext` is made for every call.  ``session_id`` is the
session the host named; ``host_tools()`` lists the tools the host exposes
(``GetExposedElixirTools``, asked once per session) and
``call_host_tool(name, **arguments)`` runs one (``ExecuteElixirTool``), both
through the worker's link to its host with the call's deadline.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .host_link import HostLink

__all__ = ["HostToolError", "SessionContext"]


class HostToolError(Exception):
    """A host tool failed, or does not exist."""


class SessionContext:
    """The context of one tool call."""

    def __init__(
        self,
        session_id: str,
        *,
        link: HostLink | None = None,
        deadline: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.session_id = session_id
        self.metadata = dict(metadata or {})
        self._link = link
        self._deadline = deadline  # time.monotonic() value, None: none

    def time_remaining(self) -> float | None:
        """Seconds until the host gives up on this call (None: no deadline)."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def cancelled(self) -> bool:
        remaining = self.time_remaining()
        return remaining is not None and remaining <= 0

    def host_tools(self) -> dict[str, Any]:
        """The host's exposed tools by name (their ``ToolInfo``)."""
        if self._link is None:
            return {}
        return {t.name: t for t in self._link.host_tools(self.session_id, self._deadline)}

    def call_host_tool(self, name: str, **arguments: Any) -> Any:
        """Run a host tool; its result, or :class:`HostToolError`."""
        if self._link is None:
            raise HostToolError("this worker has no host to call")
        return self._link.call_host_tool(self.session_id, name, arguments, self._deadline)

    def __repr__(self) -> str:
        return f"SessionContext(session_id={self.session_id!r})"
