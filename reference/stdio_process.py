"""What a stdio bridge process must do besides answering frames (PROTOCOL §2.7, §5).

Keeping fd 1 for frames only (:func:`claim_stdout`), larger pipes and a heap
that keeps large frames' memory warm, stopping the child processes an
adapter left behind, and the :class:`Watcher` thread that makes sure a
signal or a closed stdout always reaches the server loop.  Everything here
is best effort where the operating system may refuse, and costs nothing per
frame.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import stat
import sys
import threading
from pathlib import Path
from typing import Final

__all__ = [
    "PIPE_SIZE",
    "Watcher",
    "claim_stdout",
    "is_pipe_or_socket",
    "set_pipe_size",
    "stop_children",
    "tune_allocator",
]

# The pipe size we ask for: a full pipe then fits the loop's first receive
# buffer in one read.
PIPE_SIZE: Final = 1024 * 1024

# How often the watcher thread re-interrupts the main thread until it has
# acted on a signal or a hang-up: quick against the 2 s budget, rare enough to
# cost nothing.
NUDGE_INTERVAL_MS: Final = 50

# Signal numbers (as set_wakeup_fd writes them) that end the bridge.
_TERMINATING: Final = frozenset((signal.SIGTERM.value, signal.SIGINT.value))

_HANGUP: Final = select.POLLERR | select.POLLHUP | select.POLLNVAL

# -- stdout hygiene (§2.7) --------------------------------------------------------

_frames_fd: int | None = None


def claim_stdout() -> int:
    """Keep fd 1 for frames only; return the private descriptor to write them to.

    Duplicates fd 1 (non-inheritable, so child processes never see it), then
    makes fd 1 a copy of stderr and points ``sys.stdout`` at ``sys.stderr``:
    ``print()``, C-level writes to fd 1 and child processes all land on
    stderr.  Idempotent.
    """
    global _frames_fd
    if _frames_fd is None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        frames_fd = os.dup(1)
        try:
            os.dup2(2, 1)
        except OSError:  # no stderr: send stray output nowhere rather than into frames
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
        sys.stdout = sys.stderr
        _frames_fd = frames_fd
    return _frames_fd


def set_pipe_size(fd: int) -> None:
    # Bigger pipes make large frames several times faster; refusal is harmless.
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


# glibc returns freed memory at the top of the heap to the kernel once 2x the
# largest recent block is free, so every large frame's buffers were mapped
# afresh, page fault by page fault: measured 2.5x slower 1 MiB echoes.  Keeping
# up to this much free heap (and serving blocks below the mmap threshold from
# the heap) makes a steady stream of large frames reuse warm memory.  The cost
# is that the bridge keeps its peak heap, which frames of the maximum size
# justify anyway.
_MALLOC_TRIM_THRESHOLD: Final = 64 * 1024 * 1024
_MALLOC_MMAP_THRESHOLD: Final = 32 * 1024 * 1024  # glibc's ceiling on 64-bit
_M_TRIM_THRESHOLD: Final = -1  # mallopt parameter numbers from <malloc.h>
_M_MMAP_THRESHOLD: Final = -3


def tune_allocator() -> None:
    """Keep freed heap memory for reuse (glibc only; best effort).

    loadtests/procs.py has a twin for the harness's own processes, on purpose:
    the bridge must not import the load tests, nor the harness a bridge module.
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(_M_TRIM_THRESHOLD, _MALLOC_TRIM_THRESHOLD)
        libc.mallopt(_M_MMAP_THRESHOLD, _MALLOC_MMAP_THRESHOLD)
    except (ValueError, OSError, AttributeError, ImportError):
        pass


# -- process helpers (§5.3, §5.4) ---------------------------------------------------


def is_pipe_or_socket(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def stop_children() -> None:
    """SIGTERM every child process still running (an adapter's leftovers)."""
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return
    for task in tasks:
        try:
            pids = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid), signal.SIGTERM)


class Watcher(threading.Thread):
    """Makes sure a hang-up or a signal always reaches the main loop (§5.3, §5.4).

    Two gaps it closes, both without any cost per frame:

    * The host closing our stdout is only seen by a write, which never comes
      while the bridge waits for input or runs a long command.  The thread
      sleeps in poll() on the stdout pipe (POLLERR/POLLHUP need no event mask).
    * A signal that lands just before the main thread enters a blocking
      read() is not seen until the read returns (Python runs handlers between
      bytecodes; the read is not interrupted).  ``signal.set_wakeup_fd`` tells
      the thread about every signal anyway.

    In both cases the thread "nudges" the main thread with SIGTERM every
    ``NUDGE_INTERVAL`` until the loop has ended (``stop()``): each nudge
    interrupts a blocking system call, so the pending handler runs.
    """

    def __init__(self, out_fd: int | None, main_thread: int) -> None:
        super().__init__(name="snakepit-bridge-watch", daemon=True)
        self._out_fd = out_fd
        self._main_thread = main_thread
        self._stop_r, self._stop_w = os.pipe()
        self._signal_r, self._signal_w = os.pipe()
        for fd in (self._signal_r, self._signal_w):
            os.set_blocking(fd, False)
        self._previous_wakeup_fd = -1
        self.host_gone = False

    def start(self) -> None:
        # Called on the main thread (set_wakeup_fd demands it).
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._signal_w, warn_on_full_buffer=False)
        super().start()

    def run(self) -> None:
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        poller.register(self._signal_r, select.POLLIN)
        if self._out_fd is not None:
            poller.register(self._out_fd, 0)
        nudging = False
        while True:
            for fd, events in poller.poll(NUDGE_INTERVAL_MS if nudging else None):
                if fd == self._stop_r:
                    return
                if fd == self._signal_r:
                    with contextlib.suppress(OSError):
                        received = os.read(self._signal_r, 256)
                        nudging = nudging or bool(_TERMINATING.intersection(received))
                elif events & _HANGUP:
                    self.host_gone = True
                    nudging = True
                    poller.unregister(fd)
            if nudging:
                with contextlib.suppress(OSError):
                    signal.pthread_kill(self._main_thread, signal.SIGTERM)

    def stop(self) -> None:
        """End the thread (main thread only) and give back the descriptors."""
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        self.join(timeout=1.0)
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(self._previous_wakeup_fd)
        for fd in (self._stop_r, self._stop_w, self._signal_r, self._signal_w):
            with contextlib.suppress(OSError):
                os.close(fd)
