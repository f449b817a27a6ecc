"""A small stdio bridge for the fuzz tests: correct by default, one planted defect on request.

Run as ``python toy_bridge.py [--protocol json|msgpack|auto] [--defect NAME]``.
Without ``--defect`` it follows PROTOCOL.md for §2-§6 and the §7.3 store, so
the fuzz properties must pass against it; each defect breaks it only on an
unusual input, the way the held-out bridges the fuzzer is judged by do:

* ``unicode``: echo turns U+2028 into a newline (a JavaScript-minded escaper);
* ``bigint``: integers past 2^53 pass through a double (echo and compute);
* ``negzero``: echo drops the sign of -0.0;
* ``split-header``: a header read that returns fewer than 4 bytes is padded
  with zeros instead of completed (only a write split inside a header shows it);
* ``split-utf8``: each read is decoded as UTF-8 on its own (only a write split
  inside a multi-byte character shows it);
* ``hang``: echo of a string holding NUL never returns;
* ``crash-array``: a payload that decodes to an array kills the bridge;
* ``reorder``: pings that arrive in the same read as other requests are answered first;
* ``store-session``: ``delete_stored`` deletes the id in every session;
* ``eof-hang``: end of input inside a frame is waited out forever;
* ``int-divide``: ``divide`` of two integers uses floor division.

Edge-class defects, with a threshold (``--defect NAME:N``), for measuring how often
the default fuzz budget reaches each class (benchmarks/fuzz_catch_rate.py); each
kills the bridge when echo's args hold:

* ``nesting:N``: a value nested deeper than N containers;
* ``long-string:N``: a string longer than N characters;
* ``big-binary:N``: a binary longer than N bytes (MessagePack);
* ``many-keys:N``: an object with more than N keys;
* ``big-negative:N``: an integer below -2^N (an N+1-bit signed integer type);
* ``subnormal``: a subnormal float (as if flushed to zero on the way in);
* ``astral``: a character beyond U+FFFF (a UCS-2 string type).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
DEFECT = ""


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Codec:
    def __init__(self, name: str) -> None:
        self.name = name

    def decode(self, payload: bytes) -> Any:
        if self.name == "json":
            return json.loads(payload.decode("utf-8"), parse_constant=_reject)
        import msgpack

        return msgpack.unpackb(payload, raw=False, strict_map_key=True)

    def encode(self, value: Any) -> bytes:
        if self.name == "json":
            return json.dumps(value, allow_nan=False).encode("ascii")
        import msgpack

        packed: bytes = msgpack.packb(value, use_bin_type=True)
        return packed


def _reject(token: str) -> Any:
    raise ValueError(f"non-standard token {token}")


class Reader:
    """Frames from fd 0, with the read defects planted on request."""

    def __init__(self) -> None:
        self.buffer = b""
        self.eof = False

    def _fill(self) -> None:
        chunk = os.read(0, 65536)
        if not chunk:
            self.eof = True
            return
        if DEFECT == "split-utf8":
            chunk = chunk.decode("utf-8", "replace").encode("utf-8")
        self.buffer += chunk

    def exact(self, n: int) -> bytes | None:
        while len(self.buffer) < n:
            if self.eof:
                return None
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def header(self) -> bytes | None:
        if DEFECT == "split-header" and not self.buffer:
            self._fill()
            if self.eof:
                return None
            data, self.buffer = self.buffer[:4].ljust(4, b"\0"), self.buffer[4:]
            return data
        return self.exact(4)

    def has_more(self) -> bool:
        return len(self.buffer) >= 4


def write(value: Any, codec: Codec) -> None:
    payload = codec.encode(value)
    data = HEADER.pack(len(payload)) + payload
    while data:
        data = data[os.write(1, data) :]


class Failure(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _walk(value: Any) -> Iterator[Any]:
    yield value
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    for child in children:
        yield from _walk(child)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# name -> does this args object trigger the defect, given the threshold N.
EDGE_DEFECTS: dict[str, Callable[[dict[str, Any], int], bool]] = {
    # The args object itself is one level; its values count from there.
    "nesting": lambda args, n: _depth(args) - 1 > n,
    "long-string": lambda args, n: any(isinstance(v, str) and len(v) > n for v in _walk(args)),
    "big-binary": lambda args, n: any(isinstance(v, bytes) and len(v) > n for v in _walk(args)),
    "many-keys": lambda args, n: any(isinstance(v, dict) and len(v) > n for v in _walk(args)),
    "big-negative": lambda args, n: any(_is_int(v) and v < -(2**n) for v in _walk(args)),
    "subnormal": lambda args, _: any(
        isinstance(v, float) and v != 0 and abs(v) < sys.float_info.min for v in _walk(args)
    ),
    "astral": lambda args, _: any(
        isinstance(v, str) and any(ord(c) > 0xFFFF for c in v) for v in _walk(args)
    ),
}
EDGE_THRESHOLD = 0


def mangle(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: mangle(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mangle(v) for v in value]
    if DEFECT == "unicode" and isinstance(value, str):
        return value.replace("\u2028", "\n")
    if DEFECT == "hang" and isinstance(value, str) and "\x00" in value:
        time.sleep(3600)
    if DEFECT == "bigint" and isinstance(value, int) and not isinstance(value, bool):
        return value if abs(value) <= 2**53 else float(value)
    if DEFECT == "negzero" and isinstance(value, float) and value == 0:
        return 0.0
    return value


def compute(args: dict[str, Any]) -> Any:
    ops: dict[str, Callable[[Any, Any], Any]] = {
        "add": lambda a, b: a + b,
        "subtract": lambda a, b: a - b,
        "multiply": lambda a, b: a * b,
        "divide": lambda a, b: (
            a // b if DEFECT == "int-divide" and type(a) is type(b) is int else a / b
        ),
    }
    op, a, b = args.get("operation"), mangle(args.get("a")), mangle(args.get("b"))
    if op not in ops:
        raise Failure("bad_request", f"unknown operation {op!r}")
    for x in (a, b):
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise Failure("bad_request", "operands must be numbers")
    try:
        result = ops[str(op)](a, b)
    except (ZeroDivisionError, OverflowError) as exc:
        raise Failure("handler_error", str(exc) or "arithmetic error") from exc
    return {"status": "ok", "operation": op, "inputs": {"a": a, "b": b}, "result": result}


def serialise(value: Any) -> Any:
    if isinstance(value, list | tuple | dict):
        items = list(value.items())[:10] if isinstance(value, dict) else list(value)[:10]
        shown: Any = (
            {k: serialise(v) for k, v in items}
            if isinstance(value, dict)
            else [serialise(v) for v in items]
        )
        return {"type": type(value).__name__, "value": shown, "length": len(value)}
    return {"type": type(value).__name__, "value": value}


STORE: dict[str, dict[str, Any]] = {}
STARTED = time.monotonic()
HANDLED = 0


def handle(command: str, args: dict[str, Any]) -> Any:
    session = args.get("session_id", "")
    objects = STORE.setdefault(session if isinstance(session, str) else "", {})
    if command == "ping":
        result = {
            "status": "ok",
            "bridge_type": "toy",
            "uptime": time.monotonic() - STARTED,
            "requests_handled": HANDLED,
        }
        if "worker_id" in args:
            result["worker_id"] = args["worker_id"]
        return result
    if command == "echo":
        edge = EDGE_DEFECTS.get(DEFECT)
        if edge is not None and edge(args, EDGE_THRESHOLD):
            os._exit(4)  # the planted edge-class defect: the bridge dies
        return {"status": "ok", "echoed": mangle(args)}
    if command == "compute":
        return compute(args)
    if command == "info":
        return {
            "status": "ok",
            "system_info": {},
            "bridge_info": {"name": "toy", "version": "1", "supported_commands": COMMANDS},
        }
    if command == "store":
        objects[str(args["id"])] = args.get("value")
        return {"status": "ok", "stored_as": args["id"]}
    if command in ("retrieve", "delete_stored"):
        key = args.get("id")
        if key not in objects:
            raise Failure("not_found", f"no stored object {key!r}")
        if command == "retrieve":
            return {"status": "ok", "object": serialise(objects[key])}
        for scope in STORE.values() if DEFECT == "store-session" else [objects]:
            scope.pop(key, None)
        return {"status": "ok", "deleted": key}
    if command == "list_stored":
        return {"status": "ok", "stored_objects": list(objects), "count": len(objects)}
    if command == "clear_session":
        objects.clear()
        return {"status": "ok"}
    raise Failure("unknown_command", f"unknown command {command!r}")


COMMANDS = sorted(
    [
        "ping",
        "echo",
        "compute",
        "info",
        "store",
        "retrieve",
        "delete_stored",
        "list_stored",
        "clear_session",
    ]
)


def respond(payload: bytes, codec: Codec) -> dict[str, Any]:
    global HANDLED
    request_id: Any = None
    try:
        request = codec.decode(payload)
        if DEFECT == "crash-array" and isinstance(request, list):
            os._exit(3)
        if not isinstance(request, dict):
            raise Failure("bad_request", "request is not an object")
        request_id = request.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, int | str):
            request_id = None
            raise Failure("bad_request", "bad id")
        command, args = request.get("command"), request.get("args", {})
        if not isinstance(command, str) or not isinstance(args, dict):
            raise Failure("bad_request", "bad command or args")
        HANDLED += 1
        result = handle(command, args)
        response = {"id": request_id, "success": True, "result": result, "timestamp": stamp()}
        codec.encode(response)
        return response
    except Failure as exc:
        return {
            "id": request_id,
            "success": False,
            "error": str(exc),
            "error_type": exc.error_type,
            "timestamp": stamp(),
        }
    except (ValueError, UnicodeDecodeError, RecursionError, TypeError, OverflowError) as exc:
        return {
            "id": request_id,
            "success": False,
            "error": f"decode error: {exc}",
            "error_type": "decode_error",
            "timestamp": stamp(),
        }


def main() -> None:
    global DEFECT, EDGE_THRESHOLD
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", default="auto", choices=("json", "msgpack", "auto"))
    parser.add_argument("--defect", default="")
    parser.add_argument("--tag", default="", help="ignored; lets tests find the process")
    options = parser.parse_args()
    DEFECT, _, threshold = options.defect.partition(":")
    EDGE_THRESHOLD = int(threshold or 0)
    sys.setrecursionlimit(10_000)
    codec = Codec("json" if options.protocol == "auto" else options.protocol)
    reader = Reader()
    first = options.protocol == "auto"
    held: list[dict[str, Any]] = []
    while True:
        header = reader.header()
        if header is None:
            if reader.buffer or (DEFECT == "eof-hang"):
                if DEFECT == "eof-hang":
                    time.sleep(3600)
                sys.exit(1)
            sys.exit(0)
        (length,) = HEADER.unpack(header)
        if length > MAX_FRAME:
            write(
                {
                    "id": None,
                    "success": False,
                    "error": "frame too large",
                    "error_type": "frame_too_large",
                    "timestamp": stamp(),
                },
                codec,
            )
            while length:
                got = reader.exact(min(length, 65536))
                if got is None:
                    sys.exit(1)
                length -= len(got)
            continue
        payload = reader.exact(length)
        if payload is None:
            sys.exit(1)
        if length == 0:
            write(
                {
                    "id": None,
                    "success": False,
                    "error": "empty frame",
                    "error_type": "decode_error",
                    "timestamp": stamp(),
                },
                codec,
            )
            continue
        if first:
            first = False
            try:
                offer = json.loads(payload)
            except ValueError:
                offer = None
            if isinstance(offer, dict) and offer.get("type") == "protocol_negotiation":
                chosen = "msgpack" if "msgpack" in offer.get("supported", []) else "json"
                write({"type": "protocol_selected", "protocol": chosen}, codec)
                codec = Codec(chosen)
                continue
        response = respond(payload, codec)
        if (
            DEFECT == "reorder"
            and reader.has_more()
            and response.get("result", {})
            and not (
                isinstance(response.get("result"), dict)
                and response["result"].get("bridge_type") == "toy"
            )
        ):
            held.append(response)
            continue
        write(response, codec)
        for late in held:
            write(late, codec)
        held.clear()


if __name__ == "__main__":
    main()
