"""Keeping idle CPUs quick to wake while the harness measures (Linux PM QoS).

A closed-loop load test wakes a sleeping process on every request: the
worker when a request arrives, the generator when the answer does.  Where a
CPU that goes idle enters a deep sleep state, or on a virtual machine whose
idle vCPUs halt and leave the host, that wake-up can cost more than the
request.  Measured on the 2-vCPU guest this project is developed on (idle
vCPUs halt at once: ``haltpoll.guest_halt_poll_ns=0``), a bare pipe ping-pong
between two processes on different CPUs took 56 µs a round trip and ~20 µs
of CPU on each side; with a PM QoS request of 0 µs held, 5.1 µs and 2.4 µs.
At pool 1 the kernel always puts the worker on the idle CPU, so without the
request a load point there measures the machine's idle states, not the bridge
and not the generator.

The kernel's answer to "a latency-sensitive program is running" is a CPU
latency request: while a process holds ``/dev/cpu_dma_latency`` open with a
value written to it, the idle governor only uses states that wake within that
many microseconds (0: it polls instead of halting).  ``cyclictest`` does this
by default, and tuned's latency profiles do it for servers.  The request is
the kernel's to keep and ends when the descriptor closes, so a harness that
dies, however it dies, leaves nothing behind.  Polling idle CPUs cost power
(and, on a virtual machine, the host's time) only for as long as the sweep
runs.  The device is root's: where it cannot be opened the hold says why, the
load report says the figures include the CPUs' wake-ups, and nothing else
changes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "LOW_WAKE_LATENCY_US",
    "WAKE_LATENCY_DEVICE",
    "WakeLatencyHold",
    "current_wake_latency_us",
    "hold_low_wake_latency",
]

# The kernel's PM QoS interface for CPU wake-up latency (Documentation/power/
# pm_qos_interface.rst): a signed 32-bit count of microseconds, in the
# machine's byte order.
WAKE_LATENCY_DEVICE: Final = Path("/dev/cpu_dma_latency")
# 0 µs: no idle state that takes any time to leave, so idle CPUs poll.  1 µs
# (tuned's choice) still allows a halt on KVM guests, whose halt state
# declares an exit latency of 1 µs however long the host takes.
LOW_WAKE_LATENCY_US: Final = 0
_VALUE_SIZE: Final = 4


@dataclass(frozen=True)
class WakeLatencyHold:
    """What came of asking for low wake-up latency: whether it is held, and why (not)."""

    held: bool
    detail: str
    asked: bool = True

    @property
    def refused(self) -> str:
        """Why a hold that was asked for is not held; empty when held or not asked for."""
        return "" if self.held or not self.asked else self.detail


def current_wake_latency_us(device: Path = WAKE_LATENCY_DEVICE) -> int:
    """The latency limit the kernel enforces now (the least of every holder's request)."""
    fd = os.open(device, os.O_RDONLY)
    try:
        return int.from_bytes(os.read(fd, _VALUE_SIZE), sys.byteorder, signed=True)
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold_low_wake_latency(
    wanted: bool = True, device: Path = WAKE_LATENCY_DEVICE
) -> Iterator[WakeLatencyHold]:
    """Hold a CPU latency request of :data:`LOW_WAKE_LATENCY_US` for the ``with`` block.

    ``wanted`` False asks for nothing (the machine's idle states as they
    are).  Never raises for a request the machine refuses: the hold says
    what happened, and the caller reports it.
    """
    if not wanted:
        yield WakeLatencyHold(False, "not asked for (the machine's idle states)", asked=False)
        return
    try:
        fd = os.open(device, os.O_WRONLY)
    except FileNotFoundError:
        yield WakeLatencyHold(False, f"{device} does not exist (a kernel without PM QoS)")
        return
    except OSError as exc:
        yield WakeLatencyHold(False, f"cannot open {device}: {exc.strerror} (root only by default)")
        return
    try:
        try:
            os.write(fd, LOW_WAKE_LATENCY_US.to_bytes(_VALUE_SIZE, sys.byteorder, signed=True))
            enforced = current_wake_latency_us(device)
        except OSError as exc:
            yield WakeLatencyHold(False, f"{device} refused the request: {exc.strerror}")
            return
        if enforced > LOW_WAKE_LATENCY_US:
            yield WakeLatencyHold(False, f"{device} took the request but enforces {enforced} µs")
            return
        yield WakeLatencyHold(True, f"{device} held at {LOW_WAKE_LATENCY_US} µs")
    finally:
        os.close(fd)
