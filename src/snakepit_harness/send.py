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

from .errors import BridgeCrashed, BridgeTimeout, CodecError, RemoteProtocolError
from .protocol import Codec, UnencodableValue, get_codec
from .transports.stdio import StdioBridge

__all__ = ["check_envelope", "register", "run_send"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_ERROR: Final = 2

# The default bridge: the bundled reference v2 bridge, run with this interpreter
# so it works inside any virtual environment without PATH set up.
DEFAULT_BRIDGE: Final = (sys.executable, "-m", "snakepit_bridge.generic_bridge_v2")

# §5.1 lets a bridge take 20 s to answer its first request.
DEFAULT_TIMEOUT: Final = 20.0

NEGOTIATE: Final = "negotiate"

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
        choices=("json", "msgpack", NEGOTIATE),
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


def check_envelope(response: Any, request_id: Any) -> list[str]:
    """The ways ``response`` breaks the response rules of §4.2 (empty when none)."""
    if not isinstance(response, dict):
        return [f"the response is a {type(response).__name__}, not an object (§4.2)"]
    problems = []
    if "id" not in response:
        problems.append("no `id` (§4.2)")
    elif response["id"] != request_id or type(response["id"]) is not type(request_id):
        problems.append(f"`id` is {response['id']!r}, the request's was {request_id!r} (§4.2)")
    success = response.get("success")
    if not isinstance(success, bool):
        problems.append("`success` is missing or not a boolean (§4.2)")
    elif success and "result" not in response:
        problems.append("`success` is true but there is no `result` (§4.2)")
    elif not success and not (isinstance(response.get("error"), str) and response["error"]):
        problems.append("`success` is false but `error` is not a non-empty string (§4.2)")
    if not isinstance(response.get("timestamp"), str):
        problems.append("`timestamp` is missing or not a string (§4.2)")
    return problems


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


def _negotiate(bridge: StdioBridge, timeout: float) -> Codec:
    json_codec = get_codec("json")
    offer = {
        "type": "protocol_negotiation",
        "supported": ["msgpack", "json"],
        "preferred": "msgpack",
    }
    reply = bridge.request(offer, json_codec, timeout)
    if not isinstance(reply, dict) or reply.get("type") != "protocol_selected":
        raise RemoteProtocolError(f"the negotiation reply is not protocol_selected: {reply!r}")
    chosen = reply.get("protocol")
    if chosen not in ("json", "msgpack"):
        raise RemoteProtocolError(f"the bridge selected an unknown codec: {chosen!r}")
    print(f"negotiated codec: {chosen}", file=sys.stderr)
    return get_codec(chosen)


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
        return EXIT_ERROR
    if not isinstance(request_args, dict):
        print("snakepit-harness send: --args must be a JSON object", file=sys.stderr)
        return EXIT_ERROR
    argv = args.bridge_cmd or list(DEFAULT_BRIDGE)
    request = {
        "id": args.id,
        "command": args.command,
        "args": request_args,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    try:
        bridge = StdioBridge(argv).start()
    except OSError as exc:
        print(f"snakepit-harness send: cannot start {argv[0]!r}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    with bridge:
        try:
            if args.codec == NEGOTIATE:
                codec = _negotiate(bridge, args.timeout)
            else:
                codec = get_codec(args.codec)
            wire = bridge.send(request, codec, args.timeout)
            payload = bridge.read_frame(args.timeout)
            response = codec.decode(payload)
        except UnencodableValue as exc:
            print(f"snakepit-harness send: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except BridgeTimeout as exc:
            return _misbehaved(bridge, "TIMEOUT", str(exc))
        except BridgeCrashed as exc:
            return _misbehaved(bridge, "CRASH", str(exc))
        except CodecError as exc:
            shown = payload[:HEX_PREVIEW_BYTES].hex()
            return _misbehaved(bridge, "DECODE", f"{exc}; payload (hex): {shown}")
        except RemoteProtocolError as exc:
            return _misbehaved(bridge, "FRAMING", str(exc))
        print(_pretty_json(response))
        problems = check_envelope(response, request["id"])
        if problems:
            print(f"request sent (hex): {wire[:HEX_PREVIEW_BYTES].hex()}", file=sys.stderr)
            return _misbehaved(bridge, "INVALID RESPONSE", "; ".join(problems))
        if not response["success"]:
            print(f"the command failed: {response['error']}", file=sys.stderr)
            _print_bridge_stderr(bridge)
            return EXIT_FAILED
    return EXIT_OK


def _misbehaved(bridge: StdioBridge, verdict: str, detail: str) -> int:
    print(f"{verdict}: {detail}", file=sys.stderr)
    if bridge.record.received:
        shown = bytes(bridge.record.received[:HEX_PREVIEW_BYTES]).hex()
        print(f"bytes the bridge wrote (hex, first {HEX_PREVIEW_BYTES}): {shown}", file=sys.stderr)
    _print_bridge_stderr(bridge)
    return EXIT_FAILED
