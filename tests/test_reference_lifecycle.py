"""Reference bridges' lifecycle (PROTOCOL §2.3, §2.5, §3.4, §5): negotiation, signals,
end of input, broken pipes, oversize headers, child processes and --quiet.

Each test starts its own bridge, since most of them end it.
"""

from __future__ import annotations

import signal
import struct
import time

import pytest

from snakepit_harness import get_codec
from snakepit_harness.transports import StdioBridge

from .adapters.support import (
    TIMEOUT,
    V1,
    V2,
    Session,
    adapter_env,
    negotiate,
    wait_for_stderr,
)

# Every test here runs against bridges with and without the C fast loop.
pytestmark = pytest.mark.usefixtures("both_loops")

# §5.3/§2.5/§5.4 allow 2 s; the margin absorbs a busy test machine's scheduling.
EXIT_DEADLINE = 2.0
SLACK = 1.0

BRIDGES = {"v1": V1, "v2": V2}
MISBEHAVING = (*V2, "--adapter", "misbehaving:MisbehavingHandler")

# -- negotiation (§3.4) -----------------------------------------------------------

NEGOTIATIONS = [
    # bridge, supported, preferred, expected selection
    ("v2", ["json", "msgpack"], "msgpack", "msgpack"),
    ("v2", ["msgpack", "json"], "json", "json"),
    ("v2", ["json"], "json", "json"),
    ("v2", ["cbor", "msgpack", "json"], "cbor", "msgpack"),  # preferred unknown: a common one
    ("v2", ["cbor"], "cbor", "json"),  # nothing in common: JSON, mandatory everywhere
    ("v1", ["json", "msgpack"], "msgpack", "json"),  # v1 speaks JSON only
]


@pytest.mark.parametrize(("which", "supported", "preferred", "expected"), NEGOTIATIONS)
def test_negotiation_selects_a_common_codec_and_uses_it(
    which: str, supported: list[str], preferred: str, expected: str
) -> None:
    with StdioBridge(BRIDGES[which]) as bridge:
        assert negotiate(bridge, supported, preferred) == expected
        s = Session(bridge, expected)
        assert s.ok(1, "ping", initialization=True)["status"] == "ok"
        assert s.ok(2, "echo", x=[1, "two"])["echoed"] == {"x": [1, "two"]}


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_first_frame_not_negotiation_is_an_ordinary_json_request(which: str) -> None:
    # Dropping it would lose Snakepit's init ping (§3.4).
    with StdioBridge(BRIDGES[which]) as bridge:
        s = Session(bridge, "json")
        assert s.ok(1, "ping", worker_id="w1", initialization=True)["worker_id"] == "w1"
        # Only the first frame may negotiate: later it is a request without a command.
        late = s.request({"type": "protocol_negotiation", "supported": ["msgpack"]})
        assert late["success"] is False and late["error_type"] == "bad_request"
        s.assert_serving()


def test_malformed_first_frame_in_auto_mode_stays_json() -> None:
    with StdioBridge(V2) as bridge:
        s = Session(bridge, "json")
        assert s.raw(b"\x82\xa2id\x01")["error_type"] == "decode_error"
        s.assert_serving()


def test_explicit_protocol_expects_no_negotiation() -> None:
    with StdioBridge((*V2, "--protocol", "msgpack")) as bridge:
        s = Session(bridge, "msgpack")
        reply = s.request({"type": "protocol_negotiation", "supported": ["json"]})
        assert reply["success"] is False and reply["error_type"] == "bad_request"
        s.assert_serving()


# -- oversize headers (§2.3) ------------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_oversize_header_is_answered_at_once_without_allocating(codec: str) -> None:
    limit = 1024 * 1024
    announced = 48 * 1024 * 1024
    with StdioBridge((*V2, "--protocol", codec, "--max-frame-size", str(limit))) as bridge:
        s = Session(bridge, codec)
        s.assert_serving()
        before = bridge.peak_rss_bytes()
        bridge.send_bytes(struct.pack(">I", announced), TIMEOUT)
        # Answered on the header alone: the host has not sent a byte of the payload.
        answer = s.read()
        assert answer["success"] is False and answer["error_type"] == "frame_too_large"
        assert answer["id"] is None
        chunk = b"\xc1" * (1024 * 1024)
        for _ in range(announced // len(chunk)):
            bridge.send_bytes(chunk, TIMEOUT)
        s.assert_serving()  # the payload was discarded: the next frame is understood
        after = bridge.peak_rss_bytes()
        if before is not None and after is not None:
            assert after - before < 16 * 1024 * 1024, (before, after)


def test_header_announcing_4_gib_then_eof() -> None:
    with StdioBridge(V1) as bridge:
        s = Session(bridge, "json")
        bridge.send_bytes(b"\xff\xff\xff\xff", TIMEOUT)
        assert s.read()["error_type"] == "frame_too_large"
        peak = bridge.peak_rss_bytes()
        assert peak is None or peak < 256 * 1024 * 1024
        bridge.close_stdin()  # input ends inside the (discarded) frame
        ended = bridge.wait_exit(EXIT_DEADLINE + SLACK)
        assert ended is not None and ended.returncode != 0


# -- end of input (§2.5) ------------------------------------------------------------------


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_eof_at_frame_boundary_exits_0(which: str) -> None:
    with StdioBridge(BRIDGES[which]) as bridge:
        Session(bridge, "json").assert_serving()
        bridge.close_stdin()
        ended = bridge.wait_exit(EXIT_DEADLINE + SLACK)
        assert ended is not None and ended.returncode == 0, bridge.stderr_tail()


TRUNCATIONS = [b"\x00\x00", b'\x00\x00\x00\x20{"id": 1, "comm']


@pytest.mark.parametrize("which", ["v1", "v2"])
@pytest.mark.parametrize("partial", TRUNCATIONS, ids=["in-header", "in-payload"])
def test_eof_inside_a_frame_exits_nonzero_with_a_message(which: str, partial: bytes) -> None:
    with StdioBridge(BRIDGES[which]) as bridge:
        bridge.send_bytes(partial, TIMEOUT)
        bridge.close_stdin()
        ended = bridge.wait_exit(EXIT_DEADLINE + SLACK)
        assert ended is not None and ended.returncode != 0
        assert b"inside a frame" in wait_for_stderr(bridge, b"inside a frame")
        assert b"Traceback" not in bridge.stderr_tail()


# -- signals (§5.3) --------------------------------------------------------------------


@pytest.mark.parametrize("which", ["v1", "v2"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_idle_exits_0(which: str, sig: signal.Signals) -> None:
    with StdioBridge(BRIDGES[which]) as bridge:
        Session(bridge, "json").assert_serving()
        bridge.send_signal(sig)
        ended = bridge.wait_exit(EXIT_DEADLINE + SLACK)
        assert ended is not None and ended.returncode == 0, bridge.stderr_tail()
        assert b"Traceback" not in bridge.stderr_tail()


def test_sigterm_during_a_slow_command_exits_0() -> None:
    with StdioBridge(MISBEHAVING, env=adapter_env()) as bridge:
        s = Session(bridge, "json")
        s.assert_serving()
        bridge.send({"id": 1, "command": "sleep", "args": {"seconds": 30}}, s.codec, TIMEOUT)
        time.sleep(0.2)
        bridge.send_signal(signal.SIGTERM)
        ended = bridge.wait_exit(EXIT_DEADLINE + SLACK)
        assert ended is not None and ended.returncode == 0


def test_sigterm_while_writing_finishes_the_response() -> None:
    size = 24 * 1024 * 1024  # far more than a pipe holds: the write blocks on us
    with StdioBridge(MISBEHAVING, env=adapter_env()) as bridge:
        s = Session(bridge, "json")
        bridge.send({"id": 1, "command": "return_size", "args": {"size": size}}, s.codec, TIMEOUT)
        assert bridge.wait_stdout_readable(TIMEOUT)  # the response has begun
        bridge.send_signal(signal.SIGTERM)
        response = s.read()
        assert response["id"] == 1 and len(response["result"]) == size
        ended = bridge.wait_exit(EXIT_DEADLINE + SLACK)
        assert ended is not None and ended.returncode == 0


def test_sigterm_while_the_host_does_not_read_still_exits_in_time() -> None:
    with StdioBridge(MISBEHAVING, env=adapter_env()) as bridge:
        codec = get_codec("json")
        bridge.send({"id": 1, "command": "return_size", "args": {"size": 8_000_000}}, codec, 5)
        assert bridge.wait_stdout_readable(TIMEOUT)
        bridge.send_signal(signal.SIGTERM)
        ended = bridge.wait_exit(EXIT_DEADLINE + SLACK)
        assert ended is not None and ended.returncode == 0


def test_no_child_process_is_left_behind() -> None:
    with StdioBridge(MISBEHAVING, env=adapter_env()) as bridge:
        s = Session(bridge, "json")
        child = s.ok(1, "spawn_child")["child_pid"]
        assert child in bridge.group_members()
        bridge.send_signal(signal.SIGTERM)
        ended = bridge.wait_exit(EXIT_DEADLINE + SLACK)
        assert ended is not None and ended.returncode == 0
        deadline = time.monotonic() + EXIT_DEADLINE
        while bridge.group_members() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bridge.group_members() == []


# -- broken pipe (§5.4) ------------------------------------------------------------------


@pytest.mark.parametrize("which", ["v1", "v2"])
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "on-write"])
def test_host_closing_stdout_ends_the_bridge_quietly(which: str, busy: bool) -> None:
    with StdioBridge(BRIDGES[which]) as bridge:
        s = Session(bridge, "json")
        s.assert_serving()
        bridge.close_stdout()
        if busy:
            # The next answer meets the broken pipe (or the bridge already left).
            for i in range(3):
                try:
                    bridge.send({"id": i, "command": "ping"}, s.codec, 2)
                except Exception:
                    break
        ended = bridge.wait_exit(EXIT_DEADLINE + SLACK)
        assert ended is not None, "the bridge did not notice its host had gone"
        time.sleep(0.1)  # let the stderr drain catch up
        assert b"Traceback" not in bridge.stderr_tail()
        assert b"BrokenPipe" not in bridge.stderr_tail()


# -- stderr (§5.5) ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_quiet_keeps_stderr_empty_and_default_says_something(which: str) -> None:
    for quiet, expect_output in ((True, False), (False, True)):
        argv = (*BRIDGES[which], "--quiet") if quiet else BRIDGES[which]
        with StdioBridge(argv) as bridge:
            Session(bridge, "json").assert_serving()
            bridge.close_stdin()
            assert bridge.wait_exit(EXIT_DEADLINE + SLACK) is not None
            bridge.wait_stdout_eof(1.0)
            time.sleep(0.1)
            assert (bridge.stderr_total > 0) is expect_output, bridge.stderr_tail()


def test_host_closing_stdout_during_a_long_command_ends_the_bridge() -> None:
    with StdioBridge(MISBEHAVING, env=adapter_env()) as bridge:
        s = Session(bridge, "json")
        s.assert_serving()
        bridge.send({"id": 1, "command": "sleep", "args": {"seconds": 30}}, s.codec, TIMEOUT)
        time.sleep(0.2)
        bridge.close_stdout()
        ended = bridge.wait_exit(EXIT_DEADLINE + SLACK)
        assert ended is not None, "a busy bridge did not notice its host had gone"
        assert b"Traceback" not in bridge.stderr_tail()


def test_hangup_right_after_a_response_is_never_missed() -> None:
    # The host reads an answer and closes at once: the hang-up lands while the
    # bridge is between its write and its next read (a race, so repeat it).
    for _ in range(8):
        with StdioBridge((*V2, "--quiet")) as bridge:
            Session(bridge, "json").assert_serving()
            bridge.close_stdout()
            ended = bridge.wait_exit(EXIT_DEADLINE + SLACK)
            assert ended is not None and ended.returncode == 0
