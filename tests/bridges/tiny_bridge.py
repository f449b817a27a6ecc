"""A tiny stdio bridge for the conformance runner's own tests, with switchable defects.

Written from PROTOCOL.md alone (no harness or reference code), so the suite is
tested against an independent implementation.  ``--defect NAME`` (repeatable)
breaks exactly one behaviour; ``--protocol json|msgpack|auto`` as §5.5.
``TINY_BRIDGE_PIDFILE_DIR``: write this process's pid (and children's) there,
so tests can prove nothing outlives a run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MAX_FRAME = 64 * 1024 * 1024
START = time.monotonic()
HANDLED = 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--protocol", default="auto", choices=("json", "msgpack", "auto"))
    p.add_argument("--defect", action="append", default=[])
    p.add_argument("--quiet", action="store_true")
    return p.parse_args()


ARGS = parse_args()
DEFECTS = set(ARGS.defect)
OUT_FD = 1


def record_pid(pid: int) -> None:
    folder = os.environ.get("TINY_BRIDGE_PIDFILE_DIR")
    if folder:
        Path(folder, f"{pid}.pid").write_text(str(pid))


def codec_encode(codec: str, value: object) -> bytes:
    if codec == "msgpack":
        import msgpack

        packed: bytes = msgpack.packb(value, use_bin_type=True)
        return packed
    return json.dumps(value, allow_nan="nan" in DEFECTS, separators=(",", ":")).encode()


def codec_decode(codec: str, payload: bytes) -> object:
    if codec == "msgpack":
        import msgpack

        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    return json.loads(payload.decode("utf-8"), parse_constant=lambda c: 1 / 0)


def read_exact(n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = os.read(0, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


PENDING = bytearray()
WRITING = False
STOPPING = False


def on_stop_signal(signum: int, frame: object) -> None:
    """Exit with status 0, but finish a response being written first (§5.3)."""
    global STOPPING
    if WRITING and "cut-on-sigterm" not in DEFECTS:
        STOPPING = True
        return
    os._exit(0)


def write_frame(payload: bytes) -> None:
    data = struct.pack(">I", len(payload)) + payload
    if "no-flush" in DEFECTS:
        PENDING.extend(data)  # held back until more input arrives or EOF
        return
    global WRITING
    WRITING = True
    view = memoryview(data)
    while view:
        if "cut-on-sigterm" in DEFECTS and len(data) > 1 << 20:
            # A slow writer, so the signal surely lands mid-frame.
            view = view[os.write(OUT_FD, view[: 1 << 16]) :]
            time.sleep(0.005)
            continue
        view = view[os.write(OUT_FD, view) :]
    WRITING = False
    if STOPPING:
        os._exit(0)


def flush_pending() -> None:
    if PENDING:
        os.write(OUT_FD, bytes(PENDING))
        PENDING.clear()


def now() -> str:
    if "bad-timestamp" in DEFECTS:
        return "yesterday"
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def envelope(req_id: object, **fields: object) -> dict[str, object]:
    if "no-id-echo" in DEFECTS and req_id is not None:
        req_id = 0
    return {"id": req_id, **fields, "timestamp": now()}


def ok(req_id: object, result: object) -> dict[str, object]:
    return envelope(req_id, success=True, result=result)


def fail(req_id: object, error_type: str, error: str) -> dict[str, object]:
    return envelope(req_id, success=False, error=error, error_type=error_type)


def handle(req: dict[str, object]) -> dict[str, object] | None:
    global HANDLED
    req_id = req.get("id")
    command = req["command"]
    args = req.get("args", {})
    assert isinstance(args, dict)
    HANDLED += 1
    if "slow" in DEFECTS:
        time.sleep(30)
    if command == "ping":
        result = {
            "status": "ok",
            "bridge_type": "tiny",
            "uptime": time.monotonic() - START,
            "requests_handled": HANDLED,
        }
        if "worker_id" in args:
            result["worker_id"] = args["worker_id"]
        return ok(req_id, result)
    if command == "echo":
        return ok(req_id, {"status": "ok", "echoed": args})
    if command == "info":
        return ok(
            req_id,
            {
                "status": "ok",
                "bridge_info": {
                    "name": "tiny",
                    "version": "0",
                    "supported_commands": ["ping", "echo", "compute", "info"],
                },
                "system_info": {"python": sys.version.split()[0]},
            },
        )
    if command == "compute":
        op = args.get("operation")
        a: Any = args.get("a")
        b: Any = args.get("b")
        ops = {"add": lambda: a + b, "subtract": lambda: a - b, "multiply": lambda: a * b}
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
        if op == "divide":
            if not numeric:
                return fail(req_id, "bad_request", "operands must be numbers")
            if b == 0:
                return fail(req_id, "bad_request", "division by zero")
            value = a / b
        elif op in ops:
            if not numeric:
                return fail(req_id, "bad_request", "operands must be numbers")
            value = ops[op]()
        else:
            return fail(req_id, "bad_request", f"unknown operation {op!r}")
        return ok(
            req_id, {"status": "ok", "operation": op, "inputs": {"a": a, "b": b}, "result": value}
        )
    if "hang-on-unknown" in DEFECTS:
        return None
    if "legacy-unknown" in DEFECTS:
        return ok(req_id, {"status": "error", "error": f"unknown command {command}"})
    return fail(req_id, "unknown_command", f"unknown command {command!r}")


def malformed(req_id: object, error_type: str, message: str) -> None:
    if "crash-on-malformed" in DEFECTS:
        sys.exit(3)
    if "silent-on-malformed" in DEFECTS:
        return  # keeps serving, but never answers the bad frame
    send(fail(req_id, error_type, message), CODEC)


def send(response: dict[str, object], codec: str) -> None:
    try:
        payload = codec_encode(codec, response)
    except (ValueError, TypeError) as exc:
        payload = codec_encode(codec, fail(response.get("id"), "serialization_error", str(exc)))
    write_frame(payload)
    if "double-answer" in DEFECTS:
        write_frame(payload)


CODEC = "json" if ARGS.protocol == "auto" else ARGS.protocol


def main() -> int:
    global CODEC
    record_pid(os.getpid())
    if "ignore-sigterm" in DEFECTS:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, on_stop_signal)
    signal.signal(signal.SIGINT, on_stop_signal)
    if "spawn-child" in DEFECTS:
        child = subprocess.Popen(["sleep", "60"], start_new_session=True)
        record_pid(child.pid)
    if "stdout-banner" in DEFECTS:
        os.write(1, b"tiny bridge ready\n")
    if not ARGS.quiet:
        print("tiny bridge started", file=sys.stderr)
    first = True
    while True:
        header = read_exact(4)
        if "no-flush" in DEFECTS:
            flush_pending()
        if header is None:
            flush_pending()
            return 0
        (length,) = struct.unpack(">I", header)
        if "alloc-oversize" in DEFECTS:
            buffer = bytearray(length)  # allocates what the header says
            del buffer
        if length > MAX_FRAME:
            send(fail(None, "frame_too_large", f"frame of {length} bytes"), CODEC)
            left = length
            while left:
                chunk = os.read(0, min(left, 1 << 20))
                if not chunk:
                    return 1
                left -= len(chunk)
            continue
        payload = read_exact(length)
        if payload is None:
            print("end of input inside a frame", file=sys.stderr)
            return 1
        if not payload:
            malformed(None, "decode_error", "empty payload")
            continue
        try:
            req = codec_decode(CODEC, payload)
        except Exception as exc:
            malformed(None, "decode_error", str(exc))
            continue
        if first and ARGS.protocol == "auto":
            first = False
            if isinstance(req, dict) and req.get("type") == "protocol_negotiation":
                supported = req.get("supported") or []
                preferred = req.get("preferred")
                mine = ["msgpack", "json"]
                pick = preferred if preferred in mine and preferred in supported else None
                pick = pick or next((c for c in supported if c in mine), "json")
                write_frame(codec_encode("json", {"type": "protocol_selected", "protocol": pick}))
                CODEC = pick
                continue
        first = False
        if not isinstance(req, dict):
            malformed(None, "bad_request", "request must be an object")
            continue
        req_id = req.get("id")
        if not isinstance(req_id, int | str) or isinstance(req_id, bool):
            req_id = None
        if not isinstance(req.get("command"), str):
            malformed(req_id, "bad_request", "command must be a string")
            continue
        if not isinstance(req.get("args", {}), dict):
            malformed(req_id, "bad_request", "args must be an object")
            continue
        response = handle(req)
        if response is not None:
            result = response.get("result")
            if isinstance(result, dict) and isinstance(result.get("result"), float):
                value = result["result"]
                if CODEC == "json" and not math.isfinite(value) and "nan" not in DEFECTS:
                    response = fail(req_id, "serialization_error", "non-finite float")
            send(response, CODEC)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        os._exit(0)
