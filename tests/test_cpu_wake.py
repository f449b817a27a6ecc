"""Holding idle CPUs to a low wake-up latency (transports/cpu_wake.py), as load reports say.

The hold's bookkeeping runs against stand-ins for the device (a file, a
directory, ``/dev/full``); the kernel's own device is used where this test
may open it (root), and its enforced value is read back while the hold is
in place and after, so a hold that asks for nothing cannot pass.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from snakepit_harness.loadtests.report import Gates, build_report

from snakepit_harness.transports.cpu_wake import (
    LOW_WAKE_LATENCY_US,
    WAKE_LATENCY_DEVICE,
    current_wake_latency_us,
    hold_low_wake_latency,
)

DEVICE_WRITABLE = WAKE_LATENCY_DEVICE.exists() and os.access(WAKE_LATENCY_DEVICE, os.W_OK)
NEEDS_DEVICE = pytest.mark.skipif(
    not DEVICE_WRITABLE, reason=f"{WAKE_LATENCY_DEVICE} is absent or not writable (not root)"
)


def test_not_asking_holds_nothing_and_refuses_nothing(tmp_path: Path) -> None:
    device = tmp_path / "device"
    with hold_low_wake_latency(False, device) as hold:
        assert not hold.held and not hold.asked and hold.refused == ""
    assert not device.exists()  # it was not even opened


def test_a_missing_device_is_a_refusal_that_says_why(tmp_path: Path) -> None:
    with hold_low_wake_latency(True, tmp_path / "absent") as hold:
        assert not hold.held
        assert "does not exist" in hold.refused


def test_a_device_that_cannot_be_opened_is_a_refusal(tmp_path: Path) -> None:
    with hold_low_wake_latency(True, tmp_path) as hold:  # a directory: not writable as a file
        assert not hold.held
        assert hold.refused.startswith(f"cannot open {tmp_path}")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_a_device_that_refuses_the_write_is_a_refusal() -> None:
    with hold_low_wake_latency(True, Path("/dev/full")) as hold:
        assert not hold.held
        assert "refused the request" in hold.refused


def test_the_request_is_a_signed_32_bit_count_of_microseconds(tmp_path: Path) -> None:
    device = tmp_path / "device"
    device.write_bytes((2_000_000_000).to_bytes(4, sys.byteorder, signed=True))
    with hold_low_wake_latency(True, device) as hold:
        assert hold.held and hold.refused == ""
        assert device.read_bytes() == LOW_WAKE_LATENCY_US.to_bytes(4, sys.byteorder, signed=True)
        assert current_wake_latency_us(device) == LOW_WAKE_LATENCY_US


@NEEDS_DEVICE
def test_the_kernel_enforces_the_hold_only_while_it_is_held() -> None:
    before = current_wake_latency_us()
    if before <= LOW_WAKE_LATENCY_US:
        pytest.skip("another process already holds the CPUs to low wake latency")
    with hold_low_wake_latency() as hold:
        assert hold.held, hold.detail
        assert current_wake_latency_us() == LOW_WAKE_LATENCY_US
    assert current_wake_latency_us() == before


@NEEDS_DEVICE
def test_a_killed_holder_leaves_no_hold_behind() -> None:
    before = current_wake_latency_us()
    if before <= LOW_WAKE_LATENCY_US:
        pytest.skip("another process already holds the CPUs to low wake latency")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from snakepit_harness.transports.cpu_wake import hold_low_wake_latency\n"
            "with hold_low_wake_latency() as hold:\n"
            "    print(hold.held, flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "True"
        assert current_wake_latency_us() == LOW_WAKE_LATENCY_US
    finally:
        holder.kill()  # SIGKILL: no finally block of its own runs
        holder.wait(timeout=10)
    deadline = time.monotonic() + 5
    while current_wake_latency_us() != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert current_wake_latency_us() == before


def _point(held: bool, refused: str) -> dict[str, Any]:
    return {
        "config": {
            "kind": "bridge",
            "transport": "stdio",
            "pool": 1,
            "codec": "msgpack",
            "payload": "small",
            "users": 2,
        },
        "requests": 1000,
        "rps": 1000.0,
        "round_trip": {"p50_ms": 0.1, "p95_ms": 0.2, "p99_ms": 0.3, "mean_ms": 0.1},
        "loadgen_cpu_pct": 20.0,
        "wake_latency_held": held,
        "wake_latency_refused": refused,
    }


def test_a_refused_hold_is_a_warning_and_every_row_says_whether_it_held() -> None:
    refused = build_report([_point(False, "cannot open /dev/cpu_dma_latency")], Gates(), {})
    assert refused["rows"][0]["wake_latency_held"] is False
    assert [w for w in refused["warnings"] if "wake-up latency" in w] == [
        "idle CPUs kept their own wake-up latency (cannot open /dev/cpu_dma_latency): where a "
        "CPU was idle (pool 1 above all), every request also paid for waking it, which on a "
        "virtual machine can cost more than the request; run as root for figures without it "
        "(docs/load.md, --wake-latency)"
    ]
    for held, why in ((True, ""), (False, "")):  # held, or not asked for
        report = build_report([_point(held, why)], Gates(), {})
        assert report["rows"][0]["wake_latency_held"] is held
        assert not any("wake-up latency" in w for w in report["warnings"])


def _sweep_watching_the_device(tmp_path: Path, wake: str) -> tuple[dict[str, Any], set[int]]:
    """Run a one-point sweep; return its report and every enforced value seen meanwhile."""
    report_path = tmp_path / f"{wake}.json"
    sweep = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snakepit_harness",
            "load",
            *("--pool", "1", "--codec", "msgpack", "--payload", "small", "--baseline", "none"),
            *("--duration", "1", "--warmup", "0.3", "--wake-latency", wake),
            *("--json", str(report_path), "--"),
            *(sys.executable, "-m", "snakepit_bridge.generic_bridge_v2", "--quiet"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = set()
    try:
        while sweep.poll() is None:
            seen.add(current_wake_latency_us())
            time.sleep(0.01)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        _, err = sweep.communicate(timeout=30)
    assert sweep.returncode == 0, err
    return json.loads(report_path.read_text()), seen


@NEEDS_DEVICE
@pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust is not installed")
def test_a_sweep_holds_low_wake_latency_while_it_runs_unless_told_not_to(tmp_path: Path) -> None:
    before = current_wake_latency_us()
    if before <= LOW_WAKE_LATENCY_US:
        pytest.skip("another process already holds the CPUs to low wake latency")
    report, seen = _sweep_watching_the_device(tmp_path, "low")
    assert LOW_WAKE_LATENCY_US in seen
    assert [(r["wake_latency_held"], r["wake_latency_refused"]) for r in report["rows"]] == [
        (True, "")
    ]
    assert current_wake_latency_us() == before  # released when the sweep ended
    report, seen = _sweep_watching_the_device(tmp_path, "system")
    assert seen == {before}
    assert [(r["wake_latency_held"], r["wake_latency_refused"]) for r in report["rows"]] == [
        (False, "")
    ]
    assert not any("wake-up latency" in w for w in report["warnings"])
