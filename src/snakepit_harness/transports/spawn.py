"""Processes of a load run: gevent-safe spawning, supervised groups, pid files.

A load run starts processes two levels deep: the harness starts a locust
process group per point (:func:`supervised_group`), and each locust process
starts its bridges with raw non-blocking pipes (:func:`spawn_with_pipes`).
Three safety nets make sure none outlives the run, even an interrupted or
killed one: a locust process gets SIGTERM when the harness dies
(:func:`die_with_parent`); every bridge is recorded in a pid file with its
start time, so a pid reused by an unrelated process is never killed
(:func:`record_pid`); and the harness kills the group and every recorded pid
when the point ends, however it ends.  The ``/proc`` readers (CPU, memory,
start times) are :mod:`.process`'s.

Stdlib only, so the harness can import it without gevent.  The few waits use
``time.sleep``, which gevent's monkey-patching (locust applies it) turns into
a cooperative sleep inside locust processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

from .process import KILL_REAP_TIMEOUT, process_start_time
from .stdio import PIPE_SIZE, set_pipe_size

__all__ = [
    "Child",
    "die_with_parent",
    "kill_recorded",
    "record_pid",
    "spawn_with_pipes",
    "supervised_group",
    "tune_allocator",
]

_PR_SET_PDEATHSIG: Final = 1
# How often a wait for a child's exit looks again.
_POLL_S: Final = 0.01
# SIGTERM lets a locust process close its pool; after this, SIGKILL.
TERMINATE_GRACE_S: Final = 5.0


# -- spawning bridges from inside gevent ----------------------------------------


def _pipe() -> tuple[int, int]:
    """A pipe (read end, write end), enlarged to PIPE_SIZE where the kernel allows."""
    read_end, write_end = os.pipe()
    set_pipe_size(write_end, PIPE_SIZE)
    return read_end, write_end


class Child:
    """A process started by :func:`spawn_with_pipes`: a tiny Popen that never blocks the hub."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 0  # reaped by someone else (gevent's child watcher)
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        return self.returncode

    def kill_group(self) -> None:
        """SIGKILL the child's whole session/group, then reap it."""
        # Even when the leader is gone, children it left in its group may not be.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)
        self.wait(KILL_REAP_TIMEOUT)


def spawn_with_pipes(
    argv: Sequence[str], stdin: bool = True, env: Mapping[str, str] | None = None
) -> tuple[Child, int | None, int, int]:
    """Start ``argv`` in a new session with raw pipes: (child, stdin fd, stdout fd, stderr fd).

    ``env`` replaces the environment (default: this process's).

    ``os.posix_spawnp``, not ``subprocess.Popen``: under gevent, Popen runs
    Python code in the forked child, where the hub can switch to another
    greenlet; a pool's init greenlet then ran inside a fresh child and stole a
    sibling's response (seen here: workers timing out at start-up, a pid
    recorded twice).  posix_spawn runs no Python between fork and exec.  Our
    pipe ends are close-on-exec (Python's default) and non-blocking.  Raises
    ``OSError`` (with every pipe closed) when the program cannot be started.
    """
    child_in, our_in = _pipe() if stdin else (os.open(os.devnull, os.O_RDONLY), None)
    our_out, child_out = _pipe()
    our_err, child_err = _pipe()
    try:
        pid = os.posix_spawnp(
            argv[0],
            list(argv),
            os.environ if env is None else env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, child_in, 0),
                (os.POSIX_SPAWN_DUP2, child_out, 1),
                (os.POSIX_SPAWN_DUP2, child_err, 2),
            ],
            setsid=True,
        )
    except OSError:
        for fd in (child_in, our_in, our_out, child_out, our_err, child_err):
            if fd is not None:
                os.close(fd)
        raise
    for fd in (child_in, child_out, child_err):
        os.close(fd)
    for fd in (our_in, our_out, our_err):
        if fd is not None:
            os.set_blocking(fd, False)
    return Child(pid), our_in, our_out, our_err


# -- supervised process groups (the harness's locust processes) -----------------


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child (``preexec_fn``): receive ``sig`` when the parent dies.

    SIGTERM by default, so that a locust process orphaned by a killed harness
    still runs its shutdown and kills its own pool.  Linux; a no-op elsewhere.
    """
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL it after the grace period."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=TERMINATE_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=TERMINATE_GRACE_S)


_HELD_SIGNALS: Final = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def supervised_group(
    command: list[str], log_path: Path, pid_file: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` as its own process group, output to ``log_path``.

    On leaving, however the block ends: SIGTERM the group (SIGKILL after
    :data:`TERMINATE_GRACE_S`) and SIGKILL every process recorded in
    ``pid_file`` with its group.  Every process the command forks stays in its
    group, so all of them are reached.
    """
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # The harness runs no threads of its own, so preexec_fn is safe here.
            preexec_fn=die_with_parent,  # noqa: PLW1509
            env=env,
        )
    try:
        yield proc
    finally:
        # A second Ctrl-C must not cut the cleanup short: hold SIGINT/SIGTERM
        # until it is done (they are delivered, and acted on, right after).
        with _signals_held():
            try:
                _terminate(proc)
            finally:
                kill_recorded(pid_file)


# -- pid files ----------------------------------------------------------------


def record_pid(pid_file: str, pid: int) -> None:
    """Append ``pid`` and its start time to ``pid_file`` (one short append: atomic)."""
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


# -- allocator ------------------------------------------------------------------

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
