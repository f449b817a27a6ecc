"""§7.3 store of the enhanced bridge: a dictionary per session, capped, releasing memory.

The state machine drives ``store``/``retrieve``/``list_stored``/``delete_stored``/
``clear_session`` and ``call`` with ``store_as`` through the handler in-process
(fast, so hypothesis can try many sequences) and compares every answer with a
plain ``dict[session][id]`` model.  Memory release is checked with a weak
reference (the object is gone right after ``delete_stored``) and with
tracemalloc (the bytes come back).
"""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule
from snakepit_bridge import CommandError
from snakepit_bridge.enhanced import EnhancedCommandHandler, ObjectStore

SESSIONS = st.sampled_from(["", "a", "b"])
IDS = st.sampled_from(["x", "y", "z", "df.1", "_p", "", 7, "7"])
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.text(max_size=8),
    st.lists(st.integers(min_value=0, max_value=9), max_size=4),
)
CAP = 3  # small, so random sequences reach store_full


def _run(handler: EnhancedCommandHandler, command: str, args: dict[str, Any]) -> Any:
    try:
        return handler.process_command(command, args)
    except CommandError as exc:
        return exc.error_type


def _plain(value: Any) -> dict[str, Any]:
    """The §7.7 shape the handler must give back for a wire value."""
    if isinstance(value, list):
        return {"type": "list", "value": [_plain(v) for v in value], "length": len(value)}
    return {"type": type(value).__name__, "value": value}


class StoreMachine(RuleBasedStateMachine):
    """The store against ``dict[session, dict[id, value]]``."""

    stored = Bundle("stored")

    @initialize()
    def start(self) -> None:
        self.handler = EnhancedCommandHandler(max_stored=CAP)
        self.model: dict[str, dict[str | int, Any]] = {}

    @rule(target=stored, session=SESSIONS, key=IDS, value=VALUES)
    def store(self, session: str, key: str | int, value: Any) -> tuple[str, str | int]:
        out = _run(self.handler, "store", {"session_id": session, "id": key, "value": value})
        space = self.model.setdefault(session, {})
        if key not in space and len(space) >= CAP:
            assert out == "store_full"
        else:
            assert out["status"] == "ok" and out["replaced"] == (key in space)
            space[key] = value
        if not space:
            del self.model[session]
        return session, key

    @rule(session=SESSIONS, key=IDS, number=st.integers(min_value=0, max_value=99))
    def call_store_as(self, session: str, key: str | int, number: int) -> None:
        args = {"target": "math.fabs", "args": [number], "store_as": key, "session_id": session}
        out = _run(self.handler, "call", args)
        space = self.model.get(session, {})
        if not isinstance(key, str) or not key:
            assert out == "bad_request"  # store_as must be nameable by "stored.ID"
        elif key not in space and len(space) >= CAP:
            assert out == "store_full"
        else:
            assert out["stored_as"] == key
            self.model.setdefault(session, {})[key] = float(number)

    @rule(ref=stored)
    def retrieve_known(self, ref: tuple[str, str | int]) -> None:
        self._retrieve(*ref)

    @rule(session=SESSIONS, key=IDS)
    def retrieve_any(self, session: str, key: str | int) -> None:
        self._retrieve(session, key)

    def _retrieve(self, session: str, key: str | int) -> None:
        out = _run(self.handler, "retrieve", {"session_id": session, "id": key})
        space = self.model.get(session, {})
        if key in space:
            assert out["object"] == _plain(space[key])
        else:
            assert out == "not_found"

    @rule(session=SESSIONS, key=IDS)
    def delete(self, session: str, key: str | int) -> None:
        out = _run(self.handler, "delete_stored", {"session_id": session, "id": key})
        space = self.model.get(session, {})
        if key in space:
            assert out["deleted"] is True
            del space[key]
            if not space:
                del self.model[session]
        else:
            assert out == "not_found"

    @rule(session=SESSIONS)
    def clear(self, session: str) -> None:
        out = _run(self.handler, "clear_session", {"session_id": session})
        assert out["cleared"] == len(self.model.pop(session, {}))

    @rule(session=SESSIONS)
    def listing(self, session: str) -> None:
        out = _run(self.handler, "list_stored", {"session_id": session})
        assert out["stored_objects"] == list(self.model.get(session, {}))
        assert out["count"] == len(self.model.get(session, {}))

    @invariant()
    def ping_counts_everything(self) -> None:
        if not hasattr(self, "handler"):
            return
        total = sum(len(space) for space in self.model.values())
        assert self.handler.process_command("ping", {})["stored_objects"] == total


StoreMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestStoreAgainstDictModel = StoreMachine.TestCase


def test_default_session_and_missing_ids() -> None:
    handler = EnhancedCommandHandler()
    handler.process_command("store", {"id": "k", "value": {"a": 1}})
    assert handler.process_command("list_stored", {})["stored_objects"] == ["k"]
    assert handler.process_command("list_stored", {"session_id": ""})["count"] == 1
    for command in ("retrieve", "delete_stored"):
        with pytest.raises(CommandError) as caught:
            handler.process_command(command, {"id": "nope"})
        assert caught.value.error_type == "not_found" and "nope" in str(caught.value)


def test_clear_session_clears_only_its_session() -> None:
    handler = EnhancedCommandHandler()
    for session in ("s1", "s2", ""):
        handler.process_command("store", {"session_id": session, "id": "k", "value": session})
    assert handler.process_command("clear_session", {"session_id": "s1"})["cleared"] == 1
    assert handler.process_command("list_stored", {"session_id": "s1"})["count"] == 0
    assert handler.process_command("retrieve", {"session_id": "s2", "id": "k"})["object"] == {
        "type": "str",
        "value": "s2",
    }
    assert handler.process_command("list_stored", {})["stored_objects"] == ["k"]


def test_cap_answers_store_full_and_replacing_is_fine() -> None:
    handler = EnhancedCommandHandler(max_stored=2)
    handler.process_command("store", {"id": "a", "value": 1})
    handler.process_command("store", {"id": "b", "value": 2})
    with pytest.raises(CommandError) as caught:
        handler.process_command("store", {"id": "c", "value": 3})
    assert caught.value.error_type == "store_full"
    with pytest.raises(CommandError) as caught:
        handler.process_command("call", {"target": "math.sqrt", "args": [4], "store_as": "c"})
    assert caught.value.error_type == "store_full"
    assert handler.process_command("store", {"id": "a", "value": 9})["replaced"] is True
    # Another session has its own cap.
    handler.process_command("store", {"session_id": "other", "id": "c", "value": 3})


def test_default_cap_is_1000_per_session() -> None:
    handler = EnhancedCommandHandler()
    for i in range(1000):
        handler.process_command("store", {"id": f"k{i}", "value": i})
    with pytest.raises(CommandError, match="1000"):
        handler.process_command("store", {"id": "one-more", "value": 0})


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"value": 1}, "id"),
        ({"id": None, "value": 1}, "id"),
        ({"id": True, "value": 1}, "id"),
        ({"id": 1.5, "value": 1}, "id"),
        ({"id": ["k"], "value": 1}, "id"),
        ({"id": "k"}, "value"),
        ({"id": "k", "value": 1, "session_id": 3}, "session_id"),
        ({"id": "x" * 2000, "value": 1}, "1024"),
    ],
)
def test_bad_store_requests(args: dict[str, Any], problem: str) -> None:
    with pytest.raises(CommandError) as caught:
        EnhancedCommandHandler().process_command("store", args)
    assert caught.value.error_type == "bad_request" and problem in str(caught.value)


def test_deleted_object_is_released_at_once() -> None:
    pandas = pytest.importorskip("pandas", reason="pandas not installed")
    handler = EnhancedCommandHandler()
    handler.process_command(
        "call", {"target": "pandas.DataFrame", "kwargs": {"data": {"a": [1]}}, "store_as": "df"}
    )
    handler.process_command("call", {"target": "stored.df.head"})  # use it once
    frame = handler.store.get("", "df")
    assert isinstance(frame, pandas.DataFrame)
    ref = weakref.ref(frame)
    del frame
    handler.process_command("delete_stored", {"id": "df"})
    assert ref() is None, "the DataFrame is still alive after delete_stored"


def test_clear_session_releases_memory() -> None:
    handler = EnhancedCommandHandler()
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        handler.process_command(
            "store", {"session_id": "big", "id": "s", "value": "x" * 20_000_000}
        )
        handler.process_command(
            "call",
            {
                "target": "json.dumps",
                "args": [list(range(50_000))],
                "store_as": "t",
                "session_id": "big",
            },
        )
        held, _ = tracemalloc.get_traced_memory()
        assert held - base > 20_000_000
        handler.process_command("clear_session", {"session_id": "big"})
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - base < 1_000_000, f"{after - base} bytes still held after clear_session"


def test_object_store_unit() -> None:
    store = ObjectStore(max_per_session=1)
    assert store.put("s", "a", 1, from_wire=True) is True
    assert store.put("s", "a", 2, from_wire=True) is False
    assert store.get("s", "a") == 2 and store.count() == 1 and store.sessions() == ["s"]
    store.delete("s", "a")
    assert store.sessions() == [], "an emptied session must not linger"
    with pytest.raises(ValueError):
        ObjectStore(max_per_session=-1)
