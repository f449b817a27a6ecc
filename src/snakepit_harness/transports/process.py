"""Supervision of bridge processes, shared by every transport.

A bridge runs in its own session and process group so that one ``killpg``
reaches every child it started.  This module holds what the stdio and gRPC
transports (and the conformance runner) need alike: how a process ended, in
words; a thread that drains stderr and keeps its tail; one scan of ``/proc``
to find a group's members or a process's descendants; killing and reaping a
whole group; and a registry that kills every bridge still alive when the
interpreter exits, however the harness was stopped.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

__all__ = [
    "KILL_REAP_TIMEOUT",
    "BridgeExit",
    "StderrDrain",
    "alive_pids",
    "descendants",
    "describe_returncode",
    "kill_pids",
    "kill_process_group",
    "process_group_members",
    "process_memory",
    "processes_with_env",
    "signal_process",
    "track_until_exit",
    "untrack",
    "wait_for_exit",
]

# Seconds to wait for the kernel to reap a SIGKILLed process: SIGKILL cannot be
# caught, so only a process stuck in the kernel (D state) takes longer.
KILL_REAP_TIMEOUT: Final = 5.0

_STDERR_READ: Final = 65536


def describe_returncode(returncode: int | None) -> str:
    """Say how a process ended, in words ("exit status 3", "killed by SIGSEGV")."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit status {returncode}"


@dataclass(frozen=True)
class BridgeExit:
    """How a bridge process ended."""

    returncode: int
    elapsed: float  # seconds from the wait's start until the exit was seen

    @property
    def signal(self) -> signal.Signals | None:
        if self.returncode < 0:
            with contextlib.suppress(ValueError):
                return signal.Signals(-self.returncode)
        return None

    def describe(self) -> str:
        return describe_returncode(self.returncode)


class StderrDrain(threading.Thread):
    """Read a pipe until EOF, keeping only the last ``limit`` bytes.

    A bridge that fills its stderr pipe would block and look hung, so every
    transport drains stderr all the time; the tail goes into failure reports.
    """

    def __init__(self, fd: int, limit: int) -> None:
        super().__init__(name=f"stderr-drain-{fd}", daemon=True)
        self._fd = fd
        self._limit = limit
        self._tail = bytearray()
        self._lock = threading.Lock()
        self.total = 0

    def run(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, _STDERR_READ)
            except OSError:
                break
            if not chunk:
                break
            with self._lock:
                self.total += len(chunk)
                self._tail += chunk
                if len(self._tail) > self._limit:
                    del self._tail[: len(self._tail) - self._limit]
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def tail(self) -> bytes:
        with self._lock:
            return bytes(self._tail)


@dataclass(frozen=True)
class _ProcEntry:
    pid: int
    ppid: int
    pgrp: int


def _live_processes() -> list[_ProcEntry]:
    """Every process on the machine that is not a zombie (one pass over /proc)."""
    entries = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended while we looked
        # Fields after the ")" that closes the command name: state ppid pgrp ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z":
            entries.append(_ProcEntry(int(entry.name), int(fields[1]), int(fields[2])))
    return entries


def process_group_members(pgid: int) -> list[int]:
    """Pids still in process group ``pgid`` (leftover children included, zombies not)."""
    return [p.pid for p in _live_processes() if p.pgrp == pgid]


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid``, also those that left its process group."""
    children: dict[int, list[int]] = {}
    for p in _live_processes():
        children.setdefault(p.ppid, []).append(p.pid)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def processes_with_env(key: str, value: str) -> set[int]:
    """Live processes whose environment holds ``key=value`` (children inherit it).

    Finds what a bridge left behind even when it left its group and its
    parent (setsid, double fork): give each launch a unique value.
    """
    wanted = f"{key}={value}".encode()
    found = set()
    for p in _live_processes():
        try:
            environ = Path(f"/proc/{p.pid}/environ").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if wanted in environ.split(b"\0"):
            found.add(p.pid)
    return found


def alive_pids(pids: Iterable[int]) -> set[int]:
    """The pids among ``pids`` still running (zombies count as gone)."""
    out = set()
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2 :].split()[0] != "Z":
            out.add(pid)
    return out


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL leftovers a misbehaving bridge left (the harness leaves nothing running)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# The /proc/PID/status lines process_memory reports: peak virtual size, peak
# and current resident set.
_MEMORY_KEYS: Final = ("VmPeak", "VmHWM", "VmRSS")


def process_memory(pid: int) -> dict[str, int]:
    """VmPeak / VmHWM / VmRSS (bytes) of ``pid`` from /proc; empty where unavailable."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in _MEMORY_KEYS:
            with contextlib.suppress(ValueError, IndexError):
                out[key] = int(rest.split()[0]) * 1024
    return out


def wait_for_exit(proc: subprocess.Popen[bytes], timeout: float) -> BridgeExit | None:
    """Wait up to ``timeout`` seconds for ``proc`` to end; None if it did not."""
    began = time.monotonic()
    try:
        returncode = proc.wait(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
        return None
    return BridgeExit(returncode, time.monotonic() - began)


def signal_process(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to ``proc`` itself (not its group), if it is still running."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def kill_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group ``proc`` leads, and reap ``proc``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_REAP_TIMEOUT)


class _Killable(Protocol):
    def kill(self) -> None: ...


_LIVE: weakref.WeakSet[_Killable] = weakref.WeakSet()


def track_until_exit(bridge: _Killable) -> None:
    """Kill ``bridge`` when the interpreter exits unless :func:`untrack` came first."""
    _LIVE.add(bridge)


def untrack(bridge: _Killable) -> None:
    _LIVE.discard(bridge)


@atexit.register
def _kill_all_live_bridges() -> None:
    for bridge in list(_LIVE):
        bridge.kill()
