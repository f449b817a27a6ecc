"""Helpers for the reference bridge tests: bridge command lines, sessions, response checks.

Every test talks to a real bridge subprocess through
:class:`snakepit_harness.transports.StdioBridge`, as a host would.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snakepit_harness import get_codec
from snakepit_harness.transports import StdioBridge

PY = sys.executable
ADAPTERS_DIR = Path(__file__).resolve().parent
BIN_DIR = Path(sys.executable).parent

# Generous per-call deadline: the machine running the tests may be busy.
TIMEOUT = 20.0

# §4.2: ISO 8601 UTC, with Z or +00:00.
UTC_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")

V1 = (PY, "-m", "snakepit_bridge.generic_bridge")
V2 = (PY, "-m", "snakepit_bridge.generic_bridge_v2")


@dataclass(frozen=True)
class Setup:
    """One way of running a bridge: its command line and how the host talks to it."""

    name: str
    argv: tuple[str, ...]
    codec: str  # the codec used after start-up
    negotiate: bool = False  # send a §3.4 negotiation frame first

    def __str__(self) -> str:
        return self.name


# Every profile/codec combination the reference bridges serve.
SETUPS = (
    Setup("v1-json", (*V1, "--mode", "pool-worker"), "json"),
    Setup("v1-negotiated", V1, "json", negotiate=True),
    Setup("v2-json", (*V2, "--protocol", "json"), "json"),
    Setup("v2-msgpack", (*V2, "--protocol", "msgpack"), "msgpack"),
    Setup("v2-auto-json", V2, "json"),
    Setup("v2-negotiated-msgpack", V2, "msgpack", negotiate=True),
)
SETUP_IDS = [s.name for s in SETUPS]


def adapter_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment with tests/adapters importable (for --adapter)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ADAPTERS_DIR), env.get("PYTHONPATH", "")) if p
    )
    env.update(extra or {})
    return env


class Session:
    """A running bridge and the codec the host speaks to it."""

    def __init__(self, bridge: StdioBridge, codec_name: str) -> None:
        self.bridge = bridge
        self.codec = get_codec(codec_name)

    def raw(self, payload: bytes) -> dict[str, Any]:
        """Send one payload as a frame; return the decoded, checked response."""
        self.bridge.send_frame(payload, TIMEOUT)
        return self.read()

    def read(self) -> dict[str, Any]:
        frame = self.bridge.read_frame(TIMEOUT)
        response: dict[str, Any] = self.codec.decode(frame)
        check_envelope(response, frame, self.codec.name)
        return response

    def request(self, value: Any) -> dict[str, Any]:
        return self.raw(self.codec.encode(value))

    def call(self, rid: int | str, command: str, **args: Any) -> dict[str, Any]:
        response = self.request({"id": rid, "command": command, "args": args})
        assert response["id"] == rid and type(response["id"]) is type(rid), response
        return response

    def ok(self, rid: int | str, command: str, **args: Any) -> Any:
        response = self.call(rid, command, **args)
        assert response["success"] is True, response
        return response["result"]

    def assert_serving(self) -> None:
        """A ping still answers status ok (the bridge kept serving)."""
        assert self.ok(424242, "ping")["status"] == "ok"


def check_envelope(response: Any, frame: bytes, codec: str) -> None:
    """The §4.2 rules every response obeys (and §3.5 for MessagePack)."""
    assert isinstance(response, dict), response
    if codec == "msgpack":
        assert frame[:1] != b"\x83", "a MessagePack response must not start with 0x83"
    assert isinstance(response.get("success"), bool), response
    assert isinstance(response.get("timestamp"), str), response
    assert UTC_TIMESTAMP.match(response["timestamp"]), response["timestamp"]
    if response["success"]:
        assert "result" in response, response
    else:
        assert isinstance(response.get("error"), str) and response["error"], response
        assert isinstance(response.get("error_type"), str), response


def negotiate(bridge: StdioBridge, supported: list[str], preferred: str) -> str:
    """Send the §3.4 negotiation frame (JSON) and return the protocol selected."""
    json_codec = get_codec("json")
    reply = bridge.request(
        {"type": "protocol_negotiation", "supported": supported, "preferred": preferred},
        json_codec,
        TIMEOUT,
    )
    assert reply["type"] == "protocol_selected", reply
    protocol: str = reply["protocol"]
    return protocol


@contextmanager
def session(setup: Setup, env: Mapping[str, str] | None = None) -> Iterator[Session]:
    """Start the bridge as ``setup`` says (negotiating if asked) and yield a Session."""
    with StdioBridge(setup.argv, env=env) as bridge:
        if setup.negotiate:
            chosen = negotiate(bridge, ["json", "msgpack"], setup.codec)
            assert chosen == setup.codec
        yield Session(bridge, setup.codec)


def wait_for_stderr(bridge: StdioBridge, text: bytes, timeout: float = 5.0) -> bytes:
    """The bridge's stderr tail once it holds ``text`` (or whatever came by the deadline)."""
    deadline = time.monotonic() + timeout
    while text not in bridge.stderr_tail() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bridge.stderr_tail()
