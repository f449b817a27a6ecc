"""The enhanced bridge's object store (PROTOCOL §7.3): one dictionary per session.

Ids are per session (the default session is ``""``); a session's namespace
is created by its first ``store`` and dropped when its last object goes, so an
idle session costs nothing.  The store holds the only reference the bridge
keeps to an object: ``delete_stored`` and ``clear_session`` release it at once
(CPython frees it on the spot; an object that is still referenced elsewhere,
typically from inside a reference cycle, triggers a full cycle collection, at
most one per :data:`MIN_COLLECT_INTERVAL`).

Each entry also records whether its value came off the wire (plain data, by
construction) or out of a call (anything), so that only the latter need the
deep safety check when passed back by ``stored.`` reference (§7.2).
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..adapter import BadRequestError, NotFoundError, StoreFullError

__all__ = [
    "DEFAULT_MAX_STORED",
    "MAX_ID_LENGTH",
    "ObjectStore",
    "SessionView",
    "StoreKey",
    "StoredEntry",
    "check_id",
    "check_session",
]

# The §7.3 reference cap: enough for any pipeline, small enough that a runaway
# loop fails with store_full instead of exhausting memory.
DEFAULT_MAX_STORED: Final = 1000
# Ids are names, not payloads; a cap keeps list_stored answers bounded.
MAX_ID_LENGTH: Final = 1024

# An id is a string (any, even empty) or an integer, as dictionary keys from
# the wire can be; 1 and "1" are different ids.  Only non-empty string ids can
# be named by a "stored.ID" reference or given as store_as.
StoreKey = str | int


@dataclass(frozen=True)
class StoredEntry:
    value: Any
    from_wire: bool  # True: plain decoded data; False: the result of a call


def check_id(value: Any, what: str = "id") -> StoreKey:
    """A valid stored id: a string of at most :data:`MAX_ID_LENGTH` characters, or an int."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequestError(f"{what} must be a string or an integer, not {type(value).__name__}")
    if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
        raise BadRequestError(f"{what} is longer than {MAX_ID_LENGTH} characters")
    return value


def check_name(value: Any, what: str = "store_as") -> str:
    """An id a ``stored.`` reference can name: a non-empty string."""
    if not isinstance(value, str) or not value:
        raise BadRequestError(f"{what} must be a non-empty string")
    check_id(value, what)
    return value


def check_session(args: Mapping[str, Any]) -> str:
    """The request's session id (``""`` when absent), validated."""
    session = args.get("session_id", "")
    if session is None:
        return ""
    if not isinstance(session, str):
        raise BadRequestError("session_id must be a string")
    return session


class SessionView(Mapping[str, Any]):
    """One session's objects, read-only, as the resolver sees them."""

    def __init__(self, entries: Mapping[StoreKey, StoredEntry]) -> None:
        self._entries = entries

    def __getitem__(self, key: str) -> Any:
        return self._entries[key].value

    def __iter__(self) -> Iterator[str]:
        # Only string ids can be named in a target; integer ids are not listed here.
        return (key for key in self._entries if isinstance(key, str))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def entry(self, key: str) -> StoredEntry:
        return self._entries[key]


class ObjectStore:
    """Per-session dictionaries with a per-session cap."""

    def __init__(self, max_per_session: int = DEFAULT_MAX_STORED) -> None:
        if max_per_session < 0:
            raise ValueError("max_per_session must be >= 0")
        self.max_per_session = max_per_session
        self._sessions: dict[str, dict[StoreKey, StoredEntry]] = {}

    def put(self, session: str, key: StoreKey, value: Any, *, from_wire: bool) -> bool:
        """Store ``value``; True if ``key`` was new.  Replacing an id never hits the cap."""
        entries = self._sessions.get(session)
        if entries is None:
            entries = {}
        if key not in entries and len(entries) >= self.max_per_session:
            raise StoreFullError(
                f"session {session!r} already holds {len(entries)} objects (the cap, "
                "--max-stored); delete some or clear the session"
            )
        is_new = key not in entries
        entries[key] = StoredEntry(value, from_wire)
        self._sessions[session] = entries
        return is_new

    def get(self, session: str, key: StoreKey) -> Any:
        try:
            return self._sessions[session][key].value
        except KeyError:
            raise NotFoundError(f"no stored object {key!r} in session {session!r}") from None

    def delete(self, session: str, key: StoreKey) -> None:
        entries = self._sessions.get(session)
        if entries is None or key not in entries:
            raise NotFoundError(f"no stored object {key!r} in session {session!r}")
        released = [entries.pop(key)]
        if not entries:
            del self._sessions[session]
        _release(released)  # empties the list: no reference left here

    def ids(self, session: str) -> list[StoreKey]:
        """The session's ids, oldest first."""
        return list(self._sessions.get(session, ()))

    def clear(self, session: str) -> int:
        """Drop every object of ``session`` (only that session); return how many."""
        entries = self._sessions.pop(session, {})
        count = len(entries)
        released = list(entries.values())
        entries.clear()
        _release(released)  # empties the list: no reference left here
        return count

    def view(self, session: str) -> SessionView:
        return SessionView(self._sessions.get(session, {}))

    def count(self, session: str | None = None) -> int:
        """Objects in ``session``, or in every session when None."""
        if session is not None:
            return len(self._sessions.get(session, ()))
        return sum(len(entries) for entries in self._sessions.values())

    def sessions(self) -> list[str]:
        return list(self._sessions)


_ATOMS: Final = (type(None), bool, int, float, complex, str, bytes)
# A full collection costs ~0.1 s with pandas loaded (more with torch): at most
# one per this many seconds, so deleting a thousand objects stays quick.
MIN_COLLECT_INTERVAL: Final = 0.5
_last_collect = 0.0


def _release(entries: list[StoredEntry]) -> None:
    """Drop ``entries``' values now; collect cycles when something else still holds one.

    An object only the store refers to is freed by reference counting the moment
    its entry goes.  One with more referrers is shared or sits in a reference
    cycle (a DSPy module, a torch model): for that case a full collection runs,
    since a long-lived object is in the oldest generation.
    """
    global _last_collect
    # getrefcount counts its own argument; the entry holds the other reference.
    shared = any(
        type(entry.value) not in _ATOMS and sys.getrefcount(entry.value) > 2 for entry in entries
    )
    entries.clear()
    now = time.monotonic()
    if shared and now - _last_collect >= MIN_COLLECT_INTERVAL:
        gc.collect()
        _last_collect = time.monotonic()
