"""The sans-IO host connection: bytes in any split become the right events, by the table."""

from __future__ import annotations

import json
from typing import Any

import pytest

from snakepit_harness.errors import LocalProtocolError
from snakepit_harness.protocol import (
    NEED_DATA,
    Closed,
    ConnectionState,
    FramingError,
    HostConnection,
    NegotiationFailed,
    Response,
    Selected,
    encode_frame,
    get_codec,
    init_ping,
    negotiation_offer,
    response_problems,
    selection_problem,
)

msgpack = pytest.importorskip("msgpack")


def _json_frame(value: Any) -> bytes:
    return encode_frame(json.dumps(value).encode())


def _events(conn: HostConnection, data: bytes, split: int) -> list[Any]:
    """Feed ``data`` in pieces of ``split`` bytes, collecting every event."""
    events = []
    for start in range(0, len(data), split):
        conn.receive_data(data[start : start + split])
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, FramingError | NegotiationFailed):
                return events
    return events


@pytest.mark.parametrize("split", [1, 2, 3, 5, 4096])
def test_pipelined_responses_in_any_split(split: int) -> None:
    conn = HostConnection("json")
    conn.send({"id": 1, "command": "ping"})
    answers: list[dict[str, Any]] = [
        {"id": i, "success": True, "result": {}, "timestamp": "t"} for i in (1, 2, 3)
    ]
    data = b"".join(_json_frame(a) for a in answers)
    events = _events(conn, data, split)
    assert [type(e) for e in events] == [Response, Response, Response]
    assert [e.decode() for e in events] == answers
    assert conn.state is ConnectionState.READY
    assert conn.buffered == 0


@pytest.mark.parametrize("split", [1, 7, 4096])
def test_negotiation_selects_the_codec_for_later_frames(split: int) -> None:
    conn = HostConnection("negotiate")
    offer = conn.send_offer()
    assert json.loads(offer[4:]) == negotiation_offer(("msgpack", "json"))
    assert conn.state is ConnectionState.NEGOTIATING
    reply = _json_frame({"type": "protocol_selected", "protocol": "msgpack"})
    answer = encode_frame(msgpack.packb({"id": 1, "success": True}))
    events = _events(conn, reply + answer, split)
    assert isinstance(events[0], Selected) and events[0].codec == "msgpack"
    assert isinstance(events[1], Response) and events[1].decode() == {"id": 1, "success": True}
    assert conn.codec.name == "msgpack"
    assert conn.send(init_ping(2)) == encode_frame(get_codec("msgpack").encode(init_ping(2)))


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"\xff\x00", "not JSON"),
        (b"\x81\xa1a\x01", "answered the negotiation offer in msgpack"),
        (
            b"\x82\xa4type\xb1protocol_selected\xa8protocol\xa7msgpack",
            "the negotiation answer is msgpack, not JSON",
        ),
        (b'{"type": "protocol_selected", "protocol": "cbor"}', "'cbor', which was not offered"),
        (b'{"type": "hello"}', "not protocol_selected"),
        (b'{"id": 1, "success": true}', "not protocol_selected"),
    ],
)
def test_unusable_negotiation_answers_break_the_connection(reply: bytes, reason: str) -> None:
    conn = HostConnection("negotiate")
    conn.send_offer()
    conn.receive_data(encode_frame(reply))
    event = conn.next_event()
    assert isinstance(event, NegotiationFailed)
    assert reason in event.reason
    assert event.payload == reply
    assert conn.state is ConnectionState.BROKEN
    assert conn.next_event() is event  # it stays broken
    set_up_mistake = reply.startswith(b"\x81")  # an envelope, not a protocol_selected
    assert event.answered_in == ("msgpack" if set_up_mistake else None)


@pytest.mark.parametrize(
    ("reply", "answered_in"),
    [
        (msgpack.packb({"id": None, "success": False, "error": "bad request"}), "msgpack"),
        (b"\x93\x01\x02\x03", None),  # MessagePack, but not a map: not an answer
        (b"\xff\xfe not anything", None),
    ],
)
def test_an_answer_in_messagepack_says_so(reply: bytes, answered_in: str | None) -> None:
    # A bridge started with --protocol msgpack reads the JSON offer as a bad
    # request and answers in MessagePack: the event names the codec it used.
    conn = HostConnection("negotiate")
    conn.send_offer()
    conn.receive_data(encode_frame(reply))
    event = conn.next_event()
    assert isinstance(event, NegotiationFailed)
    assert event.answered_in == answered_in
    # The reason names both codecs when the answer was a map in the other one.
    assert ("msgpack" in event.reason and "JSON" in event.reason) == (answered_in is not None)


def test_large_payloads_come_out_whole() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, above the one-copy threshold
    conn = HostConnection("json")
    conn.receive_data(encode_frame(body) + encode_frame(b"[1]"))
    first, second = conn.next_event(), conn.next_event()
    assert isinstance(first, Response) and first.payload == body
    assert isinstance(second, Response) and second.payload == b"[1]"


def test_an_oversize_header_is_refused_before_its_body_is_buffered() -> None:
    conn = HostConnection("json", max_frame_size=1024)
    banner = b"hello from my adapter\n"
    conn.receive_data(banner)
    event = conn.next_event()
    assert isinstance(event, FramingError)
    assert event.announced == int.from_bytes(b"hell", "big")
    assert event.data == banner
    assert "most likely text on stdout" in event.reason
    assert conn.state is ConnectionState.BROKEN


def test_the_default_limit_turns_text_into_a_framing_error() -> None:
    conn = HostConnection("msgpack")
    conn.receive_data(b"hell")
    assert isinstance(conn.next_event(), FramingError)


@pytest.mark.parametrize(
    ("data", "partial"),
    [
        (b"", b""),
        (b"\x00\x00", b"\x00\x00"),
        (b"\x00\x00\x00\x05ab", b"\x00\x00\x00\x05ab"),
    ],
)
def test_end_of_output_reports_what_was_left(data: bytes, partial: bytes) -> None:
    conn = HostConnection("json")
    conn.receive_data(_json_frame({"id": 1}) + data)
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), Response)
    closed = conn.next_event()
    assert closed == Closed(partial)
    assert conn.state is ConnectionState.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"more")


@pytest.mark.parametrize(
    ("mode", "action"),
    [
        ("json", lambda c: c.send_offer()),  # nothing to negotiate
        ("negotiate", lambda c: (c.send_offer(), c.send_offer())),  # twice
        ("negotiate", lambda c: (c.send_offer(), c.send({"id": 1}))),  # before the answer
    ],
)
def test_moves_outside_the_table_are_local_errors(mode: str, action: Any) -> None:
    with pytest.raises(LocalProtocolError):
        action(HostConnection(mode))


def test_unknown_modes_and_offers_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        HostConnection("cbor")
    with pytest.raises(LocalProtocolError):
        HostConnection("negotiate", offered=("cbor",))


def test_a_frame_before_any_request_is_an_ordinary_response() -> None:
    conn = HostConnection("negotiate")
    conn.receive_data(_json_frame({"unsolicited": True}))
    event = conn.next_event()
    assert isinstance(event, Response) and event.decode() == {"unsolicited": True}
    assert conn.state is ConnectionState.READY


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        ([], "not an object"),
        ({"success": True, "result": 1, "timestamp": "t"}, "no `id`"),
        ({"id": "1", "success": True, "result": 1, "timestamp": "t"}, "`id` is '1'"),
        ({"id": 1, "success": "yes", "timestamp": "t"}, "not a boolean"),
        ({"id": 1, "success": True, "timestamp": "t"}, "no `result`"),
        ({"id": 1, "success": False, "error": "", "timestamp": "t"}, "non-empty string"),
        ({"id": 1, "success": True, "result": 1}, "`timestamp`"),
    ],
)
def test_response_problems_name_each_rule(response: Any, problem: str) -> None:
    problems = response_problems(response, 1)
    assert len(problems) == 1 and problem in problems[0]


def test_a_good_response_has_no_problems() -> None:
    good = {"id": 1, "success": True, "result": {"status": "ok"}, "timestamp": "t"}
    assert response_problems(good, 1) == []
    assert selection_problem({"type": "protocol_selected", "protocol": "json"}) == ""
