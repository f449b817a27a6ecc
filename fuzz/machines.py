"""Stateful fuzzing: hypothesis ``RuleBasedStateMachine`` s that hold a bridge to a model.

* :class:`PipelinedSession` (every stdio profile): pings and commands are
  written back to back and the answers read in whatever rhythm hypothesis
  picks; each answer must be the next one due, with its id, right (§4.7, as
  the real host pipelines its health pings).
* :class:`StoreModel` (``enhanced``): ``store``, ``retrieve``, ``delete_stored``,
  ``list_stored`` and ``clear_session`` across sessions against a dictionary
  per session (§7.3).

Each run of a machine starts a fresh bridge, so its transcript (every frame
written, and when each answer was read) replays from a cold start; a failure is
raised as :class:`~.properties.PropertyFailed` carrying that transcript.
Concrete machine classes are made per run by :func:`bind_machine`, which fixes
the target and the budget guard as class attributes (hypothesis builds the
machine itself, with no arguments).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, Final

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from ..errors import TransportError
from ..protocol import STDIO_PROFILES
from .oracle import match_responses
from .properties import PropertyFailed
from .strategies import Expectation, Step, compute_requests, frame
from .target import Exchange, StdioTarget, Trouble
from .values import args_objects, encode_payload, values

__all__ = ["MACHINES", "BridgeMachine", "PipelinedSession", "StoreModel", "bind_machine"]

# Sessions and ids drawn from small pools, so that runs revisit the same keys
# (a dictionary bug needs a store and a later retrieve of the same id).  Ids
# are non-empty: §7.3 does not say, and the reference bridge refuses "" as a
# bad request, a fair reading of "an id".
SESSIONS: Final = ("", "alpha", "\U0001f40d")
OBJECT_IDS: Final = ("x", "\u00e9", "\U0001f600")

# Steps per machine run: long enough for interleavings across three sessions,
# short enough that shrinking (a bridge start per attempt) stays quick.
STEPS_PER_RUN: Final = 20


class BridgeMachine(RuleBasedStateMachine):
    """Common plumbing: a fresh bridge per run, a transcript, checked reads."""

    target: ClassVar[StdioTarget]
    profile: ClassVar[str]
    guard: ClassVar[Callable[[], None]]
    on_failure: ClassVar[Callable[[PropertyFailed], None]]

    # Machines whose answers depend on earlier requests start each run on a
    # fresh bridge, so the transcript replays from a cold start.
    fresh_bridge: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        type(self).guard()
        if self.fresh_bridge:
            self.target.discard()
        self.codec = self.target.codec_name
        self.steps: list[Step] = []
        self.chunks: list[bytes] = []
        self.responses: list[Any] = []
        self.timeline: list[tuple[str, int]] = []
        self.pending: deque[int] = deque()
        self.next_id = 1
        self.failed = False

    def send(self, *requests: tuple[str, dict[str, Any], Expectation]) -> None:
        """Write the requests in one write (pipelined, §4.7), read by the bridge before the next."""
        wire = b""
        for command, args, expect in requests:
            request = {"id": self.next_id, "command": command, "args": args}
            self.next_id += 1
            step = Step(
                wire=frame(encode_payload(request, self.codec)),
                label=f"{command!r} request",
                request=request,
                expect=expect,
            )
            self.steps.append(step)
            self.pending.append(len(self.steps) - 1)
            wire += step.wire
        self.chunks.append(wire)
        self.timeline.append(("write", len(self.chunks) - 1))
        try:
            self.target.write([wire])
        except TransportError as exc:
            self.fail([f"writing {len(requests)} request(s): {exc}"], exc.stderr_tail)

    def read(self) -> Any:
        index = self.pending.popleft()
        self.timeline.append(("read", index))
        try:
            response = self.target.read_response()
        except Trouble as exc:
            self.fail([f"reading the answer to {self.steps[index].label}: {exc}"], exc.stderr_tail)
        self.responses.append(response)
        problems = match_responses([self.steps[index]], [response], self.codec)
        if problems:
            self.fail(problems)
        return response

    def call(self, command: str, args: dict[str, Any], expect: Expectation) -> Any:
        self.send((command, args, expect))
        while len(self.pending) > 1:
            self.read()
        return self.read()

    def fail(self, problems: list[str], stderr_tail: bytes = b"") -> None:
        self.failed = True
        exchange = Exchange(list(self.chunks), list(self.responses), stderr_tail=stderr_tail)
        self.target.discard()
        failure = PropertyFailed(
            problems,
            self.steps,
            exchange,
            self.codec,
            timeline=list(self.timeline),
        )
        type(self).on_failure(failure)
        raise failure

    def teardown(self) -> None:
        # After a failure the bridge is gone; reading on would start a new one.
        while self.pending and not self.failed:
            self.read()


class PipelinedSession(BridgeMachine):
    """A pipelined session of interleaved pings and commands gets every answer in order.

    §4.7: requests written back to back, answers read later in any rhythm;
    each answer carries the id of the oldest unanswered request and is right.
    """

    fresh_bridge = False  # no answer depends on earlier requests

    def _request(self, data: st.DataObject) -> tuple[str, dict[str, Any], Expectation]:
        kind = data.draw(st.sampled_from(["ping", "echo", "compute", "unknown"]), label="kind")
        if kind == "ping":
            args: dict[str, Any] = {"health_check": True}
            worker = data.draw(st.one_of(st.none(), st.text(max_size=6)), label="worker_id")
            if worker is not None:
                args["worker_id"] = worker
            return "ping", args, Expectation("ok")
        if kind == "echo":
            echoed = data.draw(args_objects(self.codec), label="args")
            return "echo", echoed, Expectation("echo", echoed)
        if kind == "compute":
            body, expect = data.draw(compute_requests(self.codec), label="compute")
            return body["command"], body["args"], expect
        name = data.draw(st.sampled_from(["nope", "", "PING", "echo ", "\u2028"]), label="name")
        return name, {}, Expectation("failure")

    @rule(data=st.data())
    def send_one(self, data: st.DataObject) -> None:
        self.send(self._request(data))

    @rule(data=st.data(), count=st.integers(2, 4))
    def send_batch(self, data: st.DataObject, count: int) -> None:
        """Several requests in one write: the bridge reads them all at once."""
        self.send(*(self._request(data) for _ in range(count)))

    @precondition(lambda self: bool(self.pending))
    @rule(count=st.integers(1, 4))
    def read_answers(self, count: int) -> None:
        for _ in range(min(count, len(self.pending))):
            self.read()


def _stored_values(codec: str) -> st.SearchStrategy[Any]:
    # §7.7 serialises Python values; bytes are "other objects", left out here.
    return values(codec, max_leaves=6).filter(lambda v: not isinstance(v, bytes))


class StoreModel(BridgeMachine):
    """The enhanced store behaves like a dictionary per session: store, retrieve, delete, list and clear across sessions.

    §7.3: ids are per session, a missing id is ``not_found``, ``clear_session``
    empties only its own session, ``list_stored`` lists exactly the ids held.
    """  # noqa: E501

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, dict[str, Any]] = {s: {} for s in SESSIONS}

    @rule(session=st.sampled_from(SESSIONS), key=st.sampled_from(OBJECT_IDS), data=st.data())
    def store(self, session: str, key: str, data: st.DataObject) -> None:
        value = data.draw(_stored_values(self.codec), label="value")
        args = {"session_id": session, "id": key, "value": value}
        self.call("store", args, Expectation("success"))
        self.model[session][key] = value

    @rule(session=st.sampled_from(SESSIONS), key=st.sampled_from(OBJECT_IDS))
    def retrieve(self, session: str, key: str) -> None:
        held = self.model[session]
        expect = Expectation("stored", held[key]) if key in held else Expectation("not_found")
        self.call("retrieve", {"session_id": session, "id": key}, expect)

    @rule(session=st.sampled_from(SESSIONS), key=st.sampled_from(OBJECT_IDS))
    def delete(self, session: str, key: str) -> None:
        held = self.model[session]
        expect = Expectation("success") if key in held else Expectation("not_found")
        self.call("delete_stored", {"session_id": session, "id": key}, expect)
        held.pop(key, None)
        self.check_other_sessions(session)

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data())
    def delete_held(self, data: st.DataObject) -> None:
        """Delete an id the model holds (a blind delete mostly meets not_found)."""
        held = sorted((s, k) for s, objects in self.model.items() for k in objects)
        session, key = data.draw(st.sampled_from(held), label="held id")
        self.delete(session, key)

    @rule(session=st.sampled_from(SESSIONS))
    def list_stored(self, session: str) -> None:
        ids = sorted(self.model[session])
        self.call("list_stored", {"session_id": session}, Expectation("listing", ids))

    @rule(session=st.sampled_from(SESSIONS))
    def clear_session(self, session: str) -> None:
        self.call("clear_session", {"session_id": session}, Expectation("success"))
        self.model[session].clear()
        self.check_other_sessions(session)

    @rule(key=st.sampled_from(OBJECT_IDS), data=st.data())
    def store_everywhere(self, key: str, data: st.DataObject) -> None:
        """The same id in every session: what a session mix-up needs to show."""
        for session in SESSIONS:
            value = data.draw(_stored_values(self.codec), label="value")
            args = {"session_id": session, "id": key, "value": value}
            self.call("store", args, Expectation("success"))
            self.model[session][key] = value

    def check_other_sessions(self, changed: str) -> None:
        """After a delete or a clear, every other session still lists what it held."""
        for session in SESSIONS:
            if session != changed and self.model[session]:
                ids = sorted(self.model[session])
                self.call("list_stored", {"session_id": session}, Expectation("listing", ids))

    @rule(key=st.sampled_from(OBJECT_IDS), value=st.integers(-5, 5))
    def default_session(self, key: str, value: int) -> None:
        """A store without ``session_id`` lands in the default session ``""``."""
        self.call("store", {"id": key, "value": value}, Expectation("success"))
        self.model[""][key] = value


MACHINES: Final[dict[str, tuple[type[BridgeMachine], frozenset[str], str]]] = {
    # name: (machine, profiles, PROTOCOL.md section)
    "pipelined-session": (PipelinedSession, frozenset(STDIO_PROFILES), "4.7"),
    "store-model": (StoreModel, frozenset({"enhanced"}), "7.3"),
}


def bind_machine(
    machine: type[BridgeMachine],
    target: StdioTarget,
    profile: str,
    guard: Callable[[], None],
    on_failure: Callable[[PropertyFailed], None],
) -> type[BridgeMachine]:
    """A subclass of ``machine`` bound to ``target`` (hypothesis instantiates it bare).

    ``guard`` runs before each machine run (the runner's time budget);
    ``on_failure`` sees every failure before it is raised.
    """
    attributes = {
        "target": target,
        "profile": profile,
        "guard": staticmethod(guard),
        "on_failure": staticmethod(on_failure),
    }
    return type(machine.__name__, (machine,), attributes)
