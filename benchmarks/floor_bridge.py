"""The floor: the least a Python v2 bridge can do per request, for ``bench_bridges.py``.

It reads frames as the raw echo does (``raw_echo.read_frames``), decodes each
request, answers ``ping`` with a four-key result and echoes anything else's
``args``: no validation, no dispatch table, no timestamps formatted per call.
It is *not* a conformant bridge; it shows how close to the raw echo any Python
bridge can get on this machine, so that a missed target can be read as "the
bridge's own overhead" or "beyond Python here".

    python benchmarks/floor_bridge.py --protocol msgpack|json
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from snakepit_harness.loadtests.raw_echo import read_frames

_TIMESTAMP = "2026-01-01T00:00:00.000000Z"  # fixed: formatting one is bridge work


def _codec(name: str) -> tuple[Callable[[memoryview], Any], Callable[[Any], bytes]]:
    if name == "msgpack":
        import msgpack

        packer = msgpack.Packer(use_bin_type=True)
        return msgpack.unpackb, packer.pack
    decoder = json.JSONDecoder().decode
    # json.dumps builds a C encoder on every call (~3 µs for a tiny object);
    # build it once, as a bridge tuned for speed would.
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - pure-Python json
        return (lambda payload: decoder(str(payload, "utf-8"))), (
            lambda value: json.dumps(value).encode()
        )
    encoder = make(
        None, None, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    return (lambda payload: decoder(str(payload, "utf-8"))), (
        lambda value: "".join(encoder(value, 0)).encode("ascii")
    )


def main() -> None:
    protocol = sys.argv[sys.argv.index("--protocol") + 1] if "--protocol" in sys.argv else "json"
    decode, encode = _codec(protocol)
    started = time.monotonic()
    for handled, frame in enumerate(read_frames(0), start=1):
        request = decode(frame[4:])
        if request["command"] == "ping":
            result = {
                "status": "ok",
                "bridge_type": "floor",
                "uptime": time.monotonic() - started,
                "requests_handled": handled,
            }
        else:
            result = {"status": "ok", "echoed": request.get("args", {})}
        out = encode(
            {"id": request["id"], "success": True, "result": result, "timestamp": _TIMESTAMP}
        )
        os.writev(1, [len(out).to_bytes(4, "big"), out])


if __name__ == "__main__":
    main()
