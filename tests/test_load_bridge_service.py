"""`load --transport bridge-service`: real locust, real workers, a real host emulator process."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

# find_spec, not importorskip: importing locust would monkey-patch this pytest
# process with gevent.
if importlib.util.find_spec("locust") is None or importlib.util.find_spec("grpc") is None:
    pytest.skip("the load and grpc extras are not installed", allow_module_level=True)

from .test_load_sweep import _alive, _cmdlines, _recorded_pids

PY = sys.executable
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "bridge_service"
REFERENCE = [PY, "-m", "snakepit_bridge.bridge_service"]
QUICK = ["--duration", "1", "--warmup", "0.3", "--users", "2", "--generator-processes", "1"]


def load(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "snakepit_harness", "load", "--transport", "bridge-service", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_sweep_over_pool_and_host_delay_with_baseline_and_nothing_left(tmp_path: Path) -> None:
    marker = f"load-bs-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "work"
    done = load(
        "--pool",
        "1,2",
        "--host-delay",
        "0,10",
        "--baseline",
        "smallest",
        *QUICK,
        "--json",
        str(tmp_path / "r.json"),
        "--csv",
        str(tmp_path / "csv"),
        "--work-dir",
        str(work),
        "--",
        *REFERENCE,
        f"--snakepit-instance-name={marker}",
    )
    assert done.returncode == 0, done.stderr + done.stdout
    # How the call was chosen is said before the sweep.
    assert "payload call: echo of small" in done.stderr
    report: dict[str, Any] = json.loads((tmp_path / "r.json").read_text())
    rows = report["rows"]
    assert [(r["kind"], r["pool"], r["codec"], r["host_delay_ms"]) for r in rows] == [
        ("baseline", 1, "raw", None),
        ("bridge", 1, "protobuf", 0.0),
        ("bridge", 1, "protobuf", 10.0),
        ("bridge", 2, "protobuf", 0.0),
        ("bridge", 2, "protobuf", 10.0),
    ]
    for row in rows:
        assert row["error"] is None, row
        assert row["requests"] > 0 and row["error_ratio"] == 0
        assert row["generator_processes"] == 1
        assert row["generator_cpu_us_per_request"] > 0
        assert isinstance(row["generator_bound"], bool)
    assert rows[1]["rps_vs_raw"] > 0  # against the bare BridgeService echo of the same run
    # One pool recommendation per host delay, judged or refused, never a codec choice.
    judged = set(report["recommendation"]["pools"]) | set(report["recommendation"]["refused"])
    assert judged == {"call/protobuf host+0ms", "call/protobuf host+10ms"}
    assert report["recommendation"]["codecs"] == {}
    assert report["options"]["planned_calls"]["call"]["tool"] == "echo"
    assert "protobuf host+10ms" in done.stdout
    header = (tmp_path / "csv" / "points.csv").read_text().splitlines()[0]
    assert "host_delay_ms" in header
    # Each point had its own host process; all of it is gone.
    assert sorted(p.name for p in work.glob("*.host.log"))
    assert _recorded_pids(work)
    assert not [pid for pid in _recorded_pids(work) if _alive(pid)]
    assert not [line for line in _cmdlines().values() if marker in line]
    assert not [line for line in _cmdlines().values() if str(work) in line]


def test_stream_payload_calls_a_streaming_tool_and_counts_its_chunks(tmp_path: Path) -> None:
    done = load(
        "--pool",
        "1",
        "--payload",
        "stream",
        "--baseline",
        "all",
        *QUICK,
        "--json",
        str(tmp_path / "r.json"),
    )
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    planned = report["options"]["planned_calls"]["stream"]
    assert planned["stream"] is True and planned["chunks"] >= 2
    rows = report["rows"]
    assert [r["kind"] for r in rows] == ["baseline", "bridge"]
    for row in rows:
        assert row["requests"] > 0 and row["error_ratio"] == 0
        assert 0 < row["first_message_p50_ms"] <= row["p50_ms"]


def test_a_worker_whose_calls_fail_gets_a_verdict_before_the_sweep() -> None:
    done = load("--pool", "1", *QUICK, "--", PY, str(FIXTURES / "every_call_fails.py"))
    assert done.returncode == 1, done.stderr + done.stdout  # the worker failed, not the options
    assert "cannot be load-tested: TOOL CALL: the trial call of 'echo' failed" in done.stderr
    assert "execute_tool" in done.stderr  # the worker's own error message
    assert "[1/" not in done.stderr  # no point ran


def test_the_default_call_falls_back_to_the_next_tool_that_answers(tmp_path: Path) -> None:
    adapters = Path(__file__).resolve().parent / "fuzz_bridges" / "bs_adapters.py"
    done = load(
        "--pool", "1", "--baseline", "none", *QUICK, "--json", str(tmp_path / "r.json"),
        "--", *REFERENCE, "--adapter", f"{adapters}:EchoFails",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    planned = json.loads((tmp_path / "r.json").read_text())["options"]["planned_calls"]["call"]
    assert planned["tool"] != "echo"
    assert "tried first: the trial call of 'echo' failed" in planned["how"]
    assert "echo is broken" in done.stderr  # said before the sweep, with the reason


@pytest.mark.parametrize(
    ("sample", "verdict"),
    [
        ("no_register_tools.py", "NO TOOLS: the worker registered no tools"),
        ("ping_fails.py", "RPC"),
    ],
)
def test_a_worker_the_harness_cannot_plan_a_call_for_gets_a_verdict(
    sample: str, verdict: str
) -> None:
    done = load("--pool", "1", *QUICK, "--", PY, str(FIXTURES / sample))
    assert done.returncode == 1, done.stderr + done.stdout
    assert f"cannot be load-tested: {verdict}" in done.stderr


def test_a_worker_that_dies_at_start_gets_a_crash_verdict_with_its_stderr() -> None:
    dies = "import sys; sys.stderr.write('adapter import failed: no module my_pkg\\n'); sys.exit(3)"
    done = load("--pool", "1", *QUICK, "--", PY, "-c", dies)
    assert done.returncode == 1, done.stderr + done.stdout
    assert "cannot be load-tested: CRASH" in done.stderr
    assert "--- worker stderr (tail) ---" in done.stderr
    assert "adapter import failed: no module my_pkg" in done.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tool", "no_such_tool"], "--tool no_such_tool: the worker registers no such tool"),
        (["--payload", "binary", "--tool", "count"], None),
        (["--master"], "--master is not supported with --transport bridge-service"),
        (["--payload", "bogus"], "unknown payload profile 'bogus'"),
        (["--host-delay", "-1"], "host delays must be 0 or more ms"),
    ],
)
def test_bad_options_and_unknown_tools_exit_2_before_any_point(
    options: list[str], message: str | None
) -> None:
    done = load("--pool", "1", *QUICK, *options)
    if message is None:  # binary goes to echo(value) regardless of --tool: it runs
        assert done.returncode == 0, done.stderr + done.stdout
        return
    assert done.returncode == 2, done.stderr + done.stdout
    assert message in done.stderr
    assert "[1/" not in done.stderr


def test_tool_calls_file_names_the_arguments_of_the_called_tool(tmp_path: Path) -> None:
    calls = tmp_path / "calls.json"
    calls.write_text(json.dumps({"add": [{"a": 2, "b": 3}]}))
    done = load(
        "--pool", "1", "--baseline", "none", *QUICK, "--tool-calls", str(calls),
        "--json", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert "payload call: add with the first --tool-calls arguments" in done.stderr
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert rows[0]["requests"] > 0 and rows[0]["error_ratio"] == 0
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    refused = load("--pool", "1", *QUICK, "--tool-calls", str(bad))
    assert refused.returncode == 2
    assert f"--tool-calls {bad}: the file must hold a JSON object" in refused.stderr


@pytest.mark.parametrize("content", [None, "not json", "[1, 2]"])
def test_load_and_conformance_refuse_a_bad_tool_calls_file_in_the_same_words(
    tmp_path: Path, content: str | None
) -> None:
    calls = tmp_path / "calls.json"
    if content is not None:
        calls.write_text(content)
    refusals = [
        subprocess.run(
            [PY, "-m", "snakepit_harness", *command, "--tool-calls", str(calls), "--", *REFERENCE],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for command in (
            ["load", "--transport", "bridge-service", "--pool", "1", *QUICK],
            ["conformance", "--profile", "bridge-service"],
        )
    ]
    errors = [
        [line for line in done.stderr.splitlines() if "--tool-calls" in line] for done in refusals
    ]
    assert all(done.returncode == 2 for done in refusals), [d.stderr for d in refusals]
    assert errors[0] == errors[1] and len(errors[0]) == 1
    assert errors[0][0].startswith(f"snakepit-harness: error: --tool-calls {calls}: ")
