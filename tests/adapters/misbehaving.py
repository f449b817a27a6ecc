"""An adapter whose commands misbehave on purpose, for the bridge tests.

Each command makes the bridge meet one thing the spec says it must survive:
results the codec cannot carry (§4.6), exceptions (§4.5), output on stdout
(§2.7), slow responses and child processes (§5.3).
"""

from __future__ import annotations

import ctypes
import math
import os
import subprocess
import sys
import time
from typing import Any

from snakepit_bridge import BadRequestError, BaseCommandHandler, NotFoundError

print("misbehaving adapter imported (this line must reach stderr, not the frames)")


class Opaque:
    """An object no codec can carry."""


def _c_puts(text: bytes) -> None:
    libc = ctypes.CDLL(None)
    libc.write(1, text, len(text))


class MisbehavingHandler(BaseCommandHandler):
    bridge_type = "misbehaving"

    def __init__(self) -> None:
        super().__init__()
        print("misbehaving adapter constructed")

    def _register_commands(self) -> None:
        table = {
            "return_set": lambda args: {1, 2, 3},
            "return_object": lambda args: Opaque(),
            "return_bytes": lambda args: b"\x00\x01",
            "return_nan": lambda args: {"value": math.nan},
            "return_inf": lambda args: [math.inf],
            "return_bigint": lambda args: 2**70,
            "return_size": lambda args: "x" * int(args["size"]),
            "raise": self.fail,
            "raise_empty": self.fail_empty,
            "raise_bad_request": self.bad_request,
            "raise_not_found": self.not_found,
            "print": self.noisy,
            "sleep": self.sleep,
            "spawn_child": self.spawn_child,
        }
        for name, fn in table.items():
            self.register_command(name, fn)

    def fail(self, args: dict[str, Any]) -> Any:
        raise RuntimeError(f"adapter failed on purpose: {args.get('why', 'no reason')}")

    def fail_empty(self, args: dict[str, Any]) -> Any:
        raise ValueError()

    def bad_request(self, args: dict[str, Any]) -> Any:
        raise BadRequestError("argument 'x' is required")

    def not_found(self, args: dict[str, Any]) -> Any:
        raise NotFoundError("no such thing")

    def noisy(self, args: dict[str, Any]) -> Any:
        print("print() from an adapter")
        sys.stdout.write("sys.stdout.write from an adapter\n")
        sys.stdout.flush()
        os.write(1, b"os.write(1) from an adapter\n")
        _c_puts(b"C write(1) from an adapter\n")
        subprocess.run(["echo", "a child process writing to its stdout"], check=True)
        return {"status": "ok", "printed": True}

    def sleep(self, args: dict[str, Any]) -> Any:
        time.sleep(float(args.get("seconds", 1.0)))
        return {"status": "ok", "slept": args.get("seconds", 1.0)}

    def spawn_child(self, args: dict[str, Any]) -> Any:
        child = subprocess.Popen(["sleep", "60"])
        return {"status": "ok", "child_pid": child.pid}
