"""Process bookkeeping shared by the harness and its locust processes (stdlib only).

A load run spawns processes two levels deep: the harness starts a locust
process per point, and that process starts the bridges.  Three safety nets
make sure none of them outlives the run, even an interrupted or killed one:

* each locust process asks the kernel for a SIGTERM when the harness dies
  (``PR_SET_PDEATHSIG``, Linux; a no-op elsewhere), and also watches its
  parent, killing its pool when the parent is gone;
* every bridge is recorded in a pid file (pid plus its start time, so that a
  pid reused by an unrelated process is never killed);
* the harness kills the recorded groups after each point, in ``finally``.

Also: CPU and memory of a set of processes, read straight from ``/proc``
(cheap enough to sample every second during a soak run).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
from pathlib import Path
from typing import Final

__all__ = [
    "cpu_seconds",
    "die_with_parent",
    "kill_recorded",
    "process_start_time",
    "record_pid",
    "rss_bytes",
    "tune_allocator",
]

_PR_SET_PDEATHSIG: Final = 1
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child (``preexec_fn``): receive ``sig`` when the parent dies.

    SIGTERM by default, so that a locust process orphaned by a killed harness
    still runs its shutdown and kills its own pool.
    """
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


# glibc allocator settings (mallopt parameter numbers from <malloc.h>): blocks
# up to 32 MiB come from the heap, which is never trimmed, so a stream of 1 MiB
# frames reuses warm memory instead of mapping (and page-faulting) a fresh
# megabyte each time.  The reference bridges and the raw echo do the same.
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_TRIM_THRESHOLD: Final = 64 * 1024 * 1024
_MMAP_THRESHOLD: Final = 32 * 1024 * 1024


def tune_allocator() -> None:
    """Keep large freed blocks for reuse (glibc only; best effort, process-wide)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    except (ValueError, OSError, AttributeError):
        pass


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the ")" closing the command name start with "state".
    return stat[stat.rfind(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None when it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def record_pid(pid_file: str, pid: int) -> None:
    """Append ``pid`` and its start time to ``pid_file``."""
    line = f"{pid} {process_start_time(pid) or 0}\n"
    with open(pid_file, "a", encoding="ascii") as handle:
        handle.write(line)


def kill_recorded(pid_file: str | Path) -> int:
    """SIGKILL the process group of every recorded, still-living pid; return how many."""
    try:
        lines = Path(pid_file).read_text(encoding="ascii").splitlines()
    except OSError:
        return 0
    killed = 0
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        pid, started = int(parts[0]), int(parts[1])
        now_started = process_start_time(pid)
        if now_started is None or (started and now_started != started):
            continue  # gone, or the pid now belongs to someone else
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            killed += 1
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return killed


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds used so far by ``pids`` (gone ones count 0)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields and len(fields) > 12:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _CLOCK_TICKS


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
