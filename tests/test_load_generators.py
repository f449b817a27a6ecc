"""`snakepit-harness load` with several generator processes, and bridges that break the stream.

Real locust processes (``--processes``), real bridges, windows of a second.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from .test_load_sweep import HANGS_AFTER_INIT

if importlib.util.find_spec("locust") is None:
    pytest.skip("the load extra (locust) is not installed", allow_module_level=True)

PY = sys.executable
V2 = [PY, "-m", "snakepit_bridge.generic_bridge_v2", "--quiet"]
QUICK = ["--duration", "1", "--warmup", "0.3"]
# The judged sweep of issue 12's generator figures: small requests, MessagePack, pools 1 and 2.
SMALL_AT_POOLS_1_2 = ["--pool", "1,2", "--codec", "msgpack", "--payload", "small"]
BANNER_BRIDGE = (
    Path(__file__).parent.parent / "fixtures" / "bridges" / "python" / "stdout_banner.py"
)
# What issue 11 allows the harness and its locust processes together.
RSS_LIMIT = 256 * 2**20
_PAGE = 4096


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), cmdline)
    return table


def _descendants(root: int, table: dict[int, tuple[int, str]]) -> set[int]:
    found, todo = {root}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def _peak_rss(pid: int) -> int:
    """The most this process has ever had resident (VmHWM), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_watched(args: list[str], timeout: float = 120) -> tuple[int, str, str, int]:
    """Run the harness; return (status, stdout, stderr, the harness's peak memory).

    The peak is the sum over the harness and every locust process it started
    (not the bridges) of each one's own peak, an upper bound of what they
    held at once.
    """
    proc = subprocess.Popen(
        [PY, "-m", "snakepit_harness", "load", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peaks: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        table = _proc_table()
        for pid in _descendants(proc.pid, table) & set(table):
            if pid == proc.pid or "-m locust" in table[pid][1]:
                peaks[pid] = max(peaks.get(pid, 0), _peak_rss(pid))
        time.sleep(0.05)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err, sum(peaks.values())


def test_text_on_stdout_ends_the_run_with_a_framing_verdict_and_little_memory() -> None:
    # The banner "sample bridge ready\n" reads as a header announcing 1.9 GB.
    status, out, err, peak = run_watched(
        [
            "--pool",
            "1",
            "--codec",
            "msgpack",
            "--baseline",
            "none",
            *QUICK,
            "--",
            PY,
            str(BANNER_BRIDGE),
        ],
    )
    assert status == 1, err + out
    tail = out.strip().splitlines()
    verdict = next(line for line in tail if "FRAMING:" in line and line.startswith("bridge"))
    assert "announcing 1935764848 bytes" in verdict
    assert "most likely text on stdout" in verdict
    assert f"(hex, first 256): {b'sample bridge ready'.hex()}" in out
    assert "--- bridge stderr (tail) ---" in out
    assert "[python-sample] ready" in out  # the bridge's own stderr, as `send` shows it
    assert tail.index(verdict) > len(tail) - 8  # among the last lines printed
    assert 0 < peak < RSS_LIMIT, f"peak {peak / 2**20:.0f} MiB"


def test_a_bridge_started_in_messagepack_is_loaded_as_if_codec_select_none(
    tmp_path: Path,
) -> None:
    status, out, err, _ = run_watched(
        [
            "--pool",
            "1",
            "--codec",
            "msgpack",
            "--baseline",
            "none",
            "--users",
            "2",
            *QUICK,
            "--json",
            str(tmp_path / "r.json"),
            "--",
            *V2,
            "--protocol",
            "msgpack",
        ],
    )
    assert status == 0, err + out
    (row,) = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert row["requests"] > 0 and row["error_ratio"] == 0
    assert "went on as with --codec-select none" in out


def test_asking_another_codec_of_a_messagepack_bridge_names_the_fix() -> None:
    status, out, err, _ = run_watched(
        [
            "--pool",
            "1",
            "--codec",
            "json",
            "--baseline",
            "none",
            *QUICK,
            "--",
            *V2,
            "--protocol",
            "msgpack",
        ],
    )
    assert status == 1, err + out
    assert "NEGOTIATION:" in out
    assert "load it with --codec msgpack" in out


def _running(marker: str) -> list[str]:
    return [cmd for _, cmd in _proc_table().values() if marker in cmd]


def test_two_generator_processes_share_the_pool_and_every_row_says_so(tmp_path: Path) -> None:
    marker = f"gen-test-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "work"
    status, out, err, _ = run_watched(
        [
            *SMALL_AT_POOLS_1_2,
            "--generator-processes",
            "2",
            "--baseline",
            "none",
            *QUICK,
            "--json",
            str(tmp_path / "r.json"),
            "--csv",
            str(tmp_path / "csv"),
            "--work-dir",
            str(work),
            "--",
            *V2,
            "--mode",
            marker,
        ],
    )
    assert status == 0, err + out
    report: dict[str, Any] = json.loads((tmp_path / "r.json").read_text())
    rows = report["rows"]
    # (Baselines get the same processes: see test_load_units.)
    assert [(r["kind"], r["pool"]) for r in rows] == [("bridge", 1), ("bridge", 2)]
    for row in rows:
        assert row["error"] is None and row["requests"] > 0 and row["error_ratio"] == 0
        assert row["generator_processes"] == 2
        assert row["generator_cpu_us_per_request"] > 0
        assert isinstance(row["generator_bound"], bool)
        # Locust's own total, merged on the master, agrees with ours even for
        # a window shorter than locust's 3 s between worker reports.
        assert row["locust_p50_ms"] == pytest.approx(row["p50_ms"], rel=0.2)
    header = (tmp_path / "csv" / "points.csv").read_text().splitlines()[0].split(",")
    assert {"generator_processes", "generator_cpu_us_per_request", "generator_bound"} <= set(header)
    assert "gen procs" in out and "gen µs/req" in out and "gen bound" in out
    # At pool 2 each process drove one worker; at pool 1 one process had none.
    pids_by_point = {
        path.name: path.read_text().split()[0::2] for path in sorted(work.glob("*.pids"))
    }
    assert [len(p) for p in pids_by_point.values()] == [1, 2]
    # A generator-bound point never makes the recommendation.
    for entry in report["recommendation"]["pools"].values():
        line = [r for r in rows if r["codec"] == entry["codec"] and r["kind"] == "bridge"]
        assert not any(r["generator_bound"] for r in line)
    time.sleep(0.2)
    assert not _running(marker)
    assert not _running(str(work))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_harness_stops_every_generator_and_bridge(
    tmp_path: Path, sig: signal.Signals
) -> None:
    marker = f"gen-stop-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "work"
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "snakepit_harness",
            "load",
            "--pool",
            "2",
            "--codec",
            "msgpack",
            "--generator-processes",
            "2",
            "--baseline",
            "none",
            "--duration",
            "60",
            "--work-dir",
            str(work),
            "--",
            *V2,
            "--mode",
            marker,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len([c for c in _running(marker) if "-m snakepit_bridge" in c]) < 2:
            if time.monotonic() > deadline:
                pytest.fail("the bridges never started")
            time.sleep(0.1)
        time.sleep(0.5)  # mid-run: both processes' users are sending
        proc.send_signal(sig)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, proc.returncode  # "interrupted", after the cleanup
    time.sleep(0.3)
    assert not _running(marker)
    assert not _running(str(work))  # no locust master or worker left


def test_a_request_past_its_deadline_fails_and_the_worker_is_replaced(tmp_path: Path) -> None:
    # The worker answers its init ping, then never again: each request must end
    # in a timeout after --timeout (the pool's watchdog), not hang the user.
    status, out, err, _ = run_watched(
        ["--pool", "1", "--codec", "json", "--codec-select", "none", "--baseline", "none",
         "--users", "1", "--timeout", "0.4", "--duration", "1.5", "--warmup", "0",
         "--json", str(tmp_path / "r.json"), "--", PY, "-c", HANGS_AFTER_INIT],
    )  # fmt: skip
    assert status == 0, err + out  # measured: every request failed, and no limit was set
    (row,) = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert row["requests"] == 0 and row["errors"] >= 2
    assert "no complete response in time" in row["top_error"]
    assert row["restarts"] >= 2


@pytest.mark.parametrize("wait", ["poll", "sleep"])
def test_a_generator_process_polls_for_answers_unless_told_to_sleep(
    tmp_path: Path, wait: str
) -> None:
    status, out, err, _ = run_watched(
        [
            *SMALL_AT_POOLS_1_2,
            "--generator-processes",
            "1",
            "--generator-wait",
            wait,
            *QUICK,
            "--json",
            str(tmp_path / "r.json"),
            "--",
            *V2,
        ],
    )
    assert status == 0, err + out
    report: dict[str, Any] = json.loads((tmp_path / "r.json").read_text())
    assert report["options"]["generator_wait"] == wait
    shares = {(r["kind"], r["pool"]): r["answers_polled_share"] for r in report["rows"]}
    assert set(shares) == {("baseline", 1), ("bridge", 1), ("baseline", 2), ("bridge", 2)}
    for (_, pool), share in shares.items():
        if wait == "sleep":
            assert share is None  # it never polled
        elif pool == 1:
            # One worker: every request of a polling trial polls, whatever
            # the trials then choose.
            assert isinstance(share, float) and 0.0 <= share <= 1.0
        else:  # two workers: it polls only while both are busy
            assert share is None or 0.0 <= share <= 1.0
    for row in report["rows"]:
        # The generator's own work is its CPU less the time it spent polling.
        busy, whole = row["generator_busy_us_per_request"], row["generator_cpu_us_per_request"]
        assert 0 < busy <= whole
        if row["answers_polled_share"] is None:
            assert busy == pytest.approx(whole)
