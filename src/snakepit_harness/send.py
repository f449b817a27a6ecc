"""``snakepit-harness send``: one request to a bridge, the answer printed for a person.

The first tool to reach for when an adapter misbehaves: it starts the bridge,
optionally negotiates the codec (PROTOCOL.md §3.4), sends one request, prints
the response as indented JSON, and on any trouble prints a one-line verdict,
the bytes involved and the bridge's stderr tail.

Exit status: 0 the command succeeded; 1 the command failed (``success:
false``) or the bridge misbehaved (no answer in time, crash, bytes that are not
a frame, a response that breaks §4.2); 2 the request could not be made.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any, Final

from .errors import (
    BridgeCrashed,
    BridgeTimeout,
    CodecError,
    HandshakeFailed,
    RemoteProtocolError,
)
from .protocol import (
    CODEC_MODES,
    NEGOTIATE,
    STARTUP_LIMIT,
    ExitCode,
    UnencodableValue,
    codec_of_object,
    request,
    response_problems,
)
from .transports.stdio import StdioBridge

__all__ = ["register", "run_send"]

# The default bridge: the bundled reference v2 bridge, run with this interpreter
# so it works inside any virtual environment without PATH set up.
DEFAULT_BRIDGE: Final = (sys.executable, "-m", "snakepit_bridge.generic_bridge_v2")

# §5.1 lets a bridge take 20 s to answer its first request.
DEFAULT_TIMEOUT: Final = STARTUP_LIMIT

# Bytes shown in hex in a verdict: enough to recognise text or a header.
HEX_PREVIEW_BYTES: Final = 256


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "send",
        help="send one request to a bridge and print the response",
        description="Start a bridge, send one request, print the response as JSON. "
        "Without `-- BRIDGE CMD...` the reference v2 bridge is used.",
    )
    parser.add_argument("command", help="the command to send, e.g. ping")
    parser.add_argument(
        "--codec",
        choices=CODEC_MODES,
        default="json",
        help="payload codec; 'negotiate' runs the §3.4 handshake preferring msgpack "
        "(default: json)",
    )
    parser.add_argument("--args", default="{}", help="the command's args as a JSON object")
    parser.add_argument("--id", default=1, type=int, help="request id (default: 1)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the answer (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.set_defaults(handler=run_send)


def _to_jsonable(value: Any) -> Any:
    """Make a decoded MessagePack value printable as JSON (bytes shown as hex)."""
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_jsonable(v) for v in value]
    return value


def _pretty_json(value: Any) -> str:
    """Indented JSON, readable characters kept unless the terminal cannot show them.

    A lone surrogate (legal in a JSON string escape) cannot be encoded to UTF-8,
    so such values fall back to ``\\u`` escapes rather than crash the printout.
    """
    text = json.dumps(_to_jsonable(value), indent=2, ensure_ascii=False, sort_keys=True)
    try:
        text.encode(sys.stdout.encoding or "utf-8")
    except UnicodeEncodeError:
        text = json.dumps(_to_jsonable(value), indent=2, ensure_ascii=True, sort_keys=True)
    return text


def _print_bridge_stderr(bridge: StdioBridge) -> None:
    tail = bridge.stderr_tail()
    if tail:
        print("--- bridge stderr (tail) ---", file=sys.stderr)
        print(tail.decode("utf-8", "replace").rstrip(), file=sys.stderr)


def run_send(args: argparse.Namespace) -> int:
    try:
        request_args = json.loads(args.args)
    except ValueError as exc:
        print(f"snakepit-harness send: --args is not JSON: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    if not isinstance(request_args, dict):
        print("snakepit-harness send: --args must be a JSON object", file=sys.stderr)
        return ExitCode.ERROR
    argv = args.bridge_cmd or list(DEFAULT_BRIDGE)
    message = request(args.id, args.command, request_args)
    message["timestamp"] = datetime.now(UTC).isoformat()
    try:
        bridge = StdioBridge(argv, codec_mode=args.codec).start()
    except OSError as exc:
        print(f"snakepit-harness send: cannot start {argv[0]!r}: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    with bridge:
        try:
            if args.codec == NEGOTIATE:
                chosen, _ = bridge.negotiate(args.timeout)
                print(f"negotiated codec: {chosen}", file=sys.stderr)
            wire = bridge.send(message, None, args.timeout)
            payload = bridge.read_frame(args.timeout)
            response = bridge.connection.codec.decode(payload)
        except UnencodableValue as exc:
            print(f"snakepit-harness send: {exc}", file=sys.stderr)
            return ExitCode.ERROR
        except BridgeTimeout as exc:
            return _misbehaved(bridge, "TIMEOUT", str(exc))
        except BridgeCrashed as exc:
            return _misbehaved(bridge, "CRASH", str(exc))
        except CodecError as exc:
            return _misbehaved(bridge, "DECODE", _decode_problem(exc, payload, args.codec))
        except HandshakeFailed as exc:
            return _misbehaved(bridge, "NEGOTIATION", str(exc))
        except RemoteProtocolError as exc:
            return _misbehaved(bridge, "FRAMING", str(exc))
        print(_pretty_json(response))
        problems = response_problems(response, message["id"])
        if problems:
            print(f"request sent (hex): {wire[:HEX_PREVIEW_BYTES].hex()}", file=sys.stderr)
            return _misbehaved(bridge, "INVALID RESPONSE", "; ".join(problems))
        if not response["success"]:
            print(f"the command failed: {response['error']}", file=sys.stderr)
            _print_bridge_stderr(bridge)
            return ExitCode.FAILED
    return ExitCode.OK


def _decode_problem(exc: CodecError, payload: bytes, codec: str) -> str:
    """What is wrong with an undecodable answer, with the fix when it is just another codec."""
    problem = f"{exc}; payload (hex): {payload[:HEX_PREVIEW_BYTES].hex()}"
    other = codec_of_object(payload)
    if other is not None:
        problem += (
            f"; the answer is {other}: the bridge was started with --protocol {other}, "
            f"so use --codec {other} (or start the bridge in {codec} mode)"
        )
    return problem


def _misbehaved(bridge: StdioBridge, verdict: str, detail: str) -> int:
    print(f"{verdict}: {detail}", file=sys.stderr)
    if bridge.record.received:
        shown = bytes(bridge.record.received[:HEX_PREVIEW_BYTES]).hex()
        print(f"bytes the bridge wrote (hex, first {HEX_PREVIEW_BYTES}): {shown}", file=sys.stderr)
    _print_bridge_stderr(bridge)
    return ExitCode.FAILED
