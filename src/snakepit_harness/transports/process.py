"""Supervision of bridge processes, shared by every transport.

A bridge runs in its own session and process group so that one ``killpg``
reaches every child it started.  This module holds what every transport needs
alike: starting a command in its own group with raw pipe descriptors; how a
process ended, in words; threads that drain stderr (keeping its tail) and
stdout lines (watching for a ready line); scans of ``/proc`` for a group's
members, a process's descendants, its memory and the sockets it listens on;
killing and reaping a whole group; and a registry that kills every bridge
still alive when the interpreter exits, however the harness was stopped.
This and the transports beside it are the only modules that touch processes.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import resource
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

__all__ = [
    "KILL_REAP_TIMEOUT",
    "BridgeExit",
    "LineReader",
    "ListeningSocket",
    "ProcessOwner",
    "SpawnedProcess",
    "StderrDrain",
    "alive_pids",
    "cpu_seconds",
    "decode_proc_address",
    "descendants",
    "describe_returncode",
    "kill_pids",
    "kill_process_group",
    "listening_sockets",
    "own_cpu_seconds",
    "process_group_members",
    "process_memory",
    "process_start_time",
    "processes_with_env",
    "rss_bytes",
    "signal_process",
    "spawn_in_group",
    "stat_fields",
    "track_until_exit",
    "untrack",
    "wait_for_exit",
]

# Seconds to wait for the kernel to reap a SIGKILLed process: SIGKILL cannot be
# caught, so only a process stuck in the kernel (D state) takes longer.
KILL_REAP_TIMEOUT: Final = 5.0

_STDERR_READ: Final = 65536

# Stdout lines a LineReader keeps (a bridge that floods stdout must not grow
# our memory), and the longest line kept whole.
LINES_KEPT: Final = 200
LINE_LIMIT: Final = 4096


@dataclass
class SpawnedProcess:
    """A command started by :func:`spawn_in_group`, with our ends of its pipes."""

    proc: subprocess.Popen[bytes]
    stdin_fd: int | None  # None when its stdin is /dev/null
    stdout_fd: int
    stderr_fd: int


def spawn_in_group(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    stdin: bool = True,
    pipe_size: int | None = None,
) -> SpawnedProcess:
    """Start ``argv`` in a new session (so it leads its own process group).

    Returns raw descriptors (duplicated from the pipes, which are closed: file
    objects would buffer and block).  ``stdin=False`` gives it /dev/null.
    ``pipe_size`` asks for bigger pipes; where the kernel refuses (raising a
    pipe past /proc/sys/fs/pipe-max-size needs privileges), the default size is
    used rather than failing.  Raises OSError when the command cannot start.
    """

    def popen(size: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            bufsize=0,
            pipesize=size,
        )

    try:
        proc = popen(pipe_size or -1)  # -1: the kernel's default size
    except PermissionError:
        if not pipe_size:
            raise
        proc = popen(-1)
    assert proc.stdout is not None and proc.stderr is not None
    stdin_fd = None
    if proc.stdin is not None:
        stdin_fd = os.dup(proc.stdin.fileno())
        proc.stdin.close()
    stdout_fd = os.dup(proc.stdout.fileno())
    stderr_fd = os.dup(proc.stderr.fileno())
    proc.stdout.close()
    proc.stderr.close()
    return SpawnedProcess(proc, stdin_fd, stdout_fd, stderr_fd)


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


class _PipeReader(threading.Thread):
    """A thread that reads a pipe until EOF, handing each chunk to :meth:`consume`."""

    def __init__(self, fd: int, name: str) -> None:
        super().__init__(name=f"{name}-{fd}", daemon=True)
        self._fd = fd
        self._lock = threading.Lock()

    def run(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, _STDERR_READ)
            except OSError:
                break
            if not chunk:
                break
            self.consume(chunk)
        self.finish()
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def consume(self, chunk: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """At EOF, before the descriptor is closed."""


class StderrDrain(_PipeReader):
    """Read a pipe until EOF, keeping only the last ``limit`` bytes.

    A bridge that fills its stderr pipe would block and look hung, so every
    transport drains stderr all the time; the tail goes into failure reports.
    """

    def __init__(self, fd: int, limit: int) -> None:
        super().__init__(fd, "stderr-drain")
        self._limit = limit
        self._tail = bytearray()
        self.total = 0

    def consume(self, chunk: bytes) -> None:
        with self._lock:
            self.total += len(chunk)
            self._tail += chunk
            if len(self._tail) > self._limit:
                del self._tail[: len(self._tail) - self._limit]

    def tail(self) -> bytes:
        with self._lock:
            return bytes(self._tail)


class LineReader(_PipeReader):
    """Read a process's stdout line by line, keeping the first lines and signalling
    the first one that starts with ``watch`` (a ready line, §8.2)."""

    def __init__(self, fd: int, watch: str | None = None) -> None:
        super().__init__(fd, "stdout-lines")
        self._watch = watch
        self._pending = b""
        self.lines: list[str] = []
        self.total_lines = 0
        self.seen = threading.Event()
        self.seen_line: str | None = None
        self.seen_at = 0.0

    def consume(self, chunk: bytes) -> None:
        self._pending += chunk
        *complete, self._pending = self._pending.split(b"\n")
        for raw in complete:
            self._add(raw)
        if len(self._pending) > LINE_LIMIT:
            self._add(self._pending)
            self._pending = b""

    def finish(self) -> None:
        if self._pending:
            self._add(self._pending)

    def _add(self, raw: bytes) -> None:
        line = raw[:LINE_LIMIT].decode("utf-8", "replace").rstrip("\r")
        with self._lock:
            self.total_lines += 1
            if len(self.lines) < LINES_KEPT:
                self.lines.append(line)
            if self._watch is not None and self.seen_line is None and line.startswith(self._watch):
                self.seen_line = line
                self.seen_at = time.monotonic()
                self.seen.set()

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)


# Units of /proc/PID/stat's CPU times and /proc/PID/statm's sizes.
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (``state ppid pgrp ...``); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: cut at the last ")".
    return stat[stat.rfind(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None when it is gone)."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds used so far by ``pids`` (gone ones count 0)."""
    total = 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields and len(fields) > 12:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _CLOCK_TICKS


def own_cpu_seconds() -> float:
    """User plus system CPU seconds of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of ``pids`` together, in bytes."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/statm").read_text().split()
        except OSError:
            continue
        total += int(fields[1]) * _PAGE_SIZE
    return total


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
        fields = stat_fields(int(entry.name))
        if fields is not None and len(fields) > 2 and fields[0] != "Z":  # None: it ended
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
        fields = stat_fields(pid)
        if fields and fields[0] != "Z":
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


@dataclass(frozen=True)
class ListeningSocket:
    """A TCP socket in LISTEN state owned by a bridge's process group."""

    address: str  # "127.0.0.1", "0.0.0.0", "::1", "::"
    port: int

    @property
    def loopback_only(self) -> bool:
        return self.address.startswith("127.") or self.address in ("::1", "::ffff:127.0.0.1")


# /proc/net/tcp's state column for LISTEN.
_TCP_LISTEN: Final = "0A"


def decode_proc_address(hex_address: str) -> str:
    """An address as /proc/net/tcp{,6} writes it (hex, host byte order) in words."""
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    # IPv6: four 32-bit words, each in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    address = ipaddress.IPv6Address(words)
    mapped = address.ipv4_mapped
    return f"::ffff:{mapped}" if mapped else str(address)


def listening_sockets(pids: Sequence[int]) -> list[ListeningSocket]:
    """TCP sockets in LISTEN state held open by any of ``pids`` (Linux /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            lines = Path(table).read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                if len(fields) < 10 or fields[3] != _TCP_LISTEN or fields[9] not in inodes:
                    continue
                address, port = fields[1].split(":")
                found.append(ListeningSocket(decode_proc_address(address), int(port, 16)))
    return found


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


class ProcessOwner:
    """What a transport that started a bridge process offers about it (a mixin).

    The transport keeps the process in ``_proc`` (None: it started none, it
    talks to a ``--target``) and its stderr drain in ``_stderr``; everything
    here reads them.  ``kill`` takes the whole process group; a transport that
    knows of more processes (the bridge-service launcher) widens it.
    """

    _proc: subprocess.Popen[bytes] | None = None
    _stderr: StderrDrain | None = None

    def _started(self, proc: subprocess.Popen[bytes], stderr_fd: int, tail_bytes: int) -> None:
        """Adopt a freshly spawned process: track it until exit, drain its stderr."""
        self._proc = proc
        track_until_exit(self)
        self._stderr = StderrDrain(stderr_fd, tail_bytes)
        self._stderr.start()

    @property
    def has_process(self) -> bool:
        return self._proc is not None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("no bridge process (not started, or a target was given)")
        return self._proc.pid

    def poll(self) -> int | None:
        """The exit status if the process has ended, else (or without one) None."""
        return self._proc.poll() if self._proc is not None else None

    def wait_exit(self, timeout: float) -> BridgeExit | None:
        """Wait up to ``timeout`` seconds for the process to end; None if it did not."""
        if self._proc is None:
            raise RuntimeError("no bridge process")
        return wait_for_exit(self._proc, timeout)

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process itself (not its group)."""
        if self._proc is not None:
            signal_process(self._proc, sig)

    def group_members(self) -> list[int]:
        """Pids still in the process group (leftover children included), not zombies."""
        return process_group_members(self._proc.pid) if self._proc is not None else []

    def stderr_tail(self) -> bytes:
        return self._stderr.tail() if self._stderr is not None else b""

    @property
    def stderr_total(self) -> int:
        return self._stderr.total if self._stderr is not None else 0

    def wait_stderr_eof(self, timeout: float) -> bool:
        """Wait until stderr is drained to EOF (so the tail is complete)."""
        if self._stderr is None:
            return True
        self._stderr.join(timeout=max(0.0, timeout))
        return not self._stderr.is_alive()

    def kill(self) -> None:
        """SIGKILL the process group and reap the process (nothing without one)."""
        if self._proc is not None:
            kill_process_group(self._proc)

    def _release_process(self, *readers: threading.Thread | None) -> None:
        """After kill(): let the readers finish their pipes, stop tracking."""
        for reader in (*readers, self._stderr):
            if reader is not None:
                reader.join(timeout=1.0)
        untrack(self)


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
