"""Load-test building blocks without locust: records, profiles, response checks, reports."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from array import array
from pathlib import Path
from typing import Any

import msgpack
import pytest
from snakepit_harness.loadtests.hires import (
    LatencyRecord,
    bucket_response_time,
    format_ms,
    percentile,
)
from snakepit_harness.loadtests.plots import render_html
from snakepit_harness.loadtests.point import PointConfig, baseline_command
from snakepit_harness.loadtests.profiles import (
    ID_BASE,
    ProfileError,
    check_response,
    load_profile,
    make_templates,
    next_id,
)
from snakepit_harness.loadtests.render import render_table, write_csv
from snakepit_harness.loadtests.report import Gates, build_report
from snakepit_harness.loadtests.sweep import SweepOptions, auto_generator_processes, plan


@pytest.mark.parametrize(
    ("response_ms", "bucket"),
    [
        (0.0421234, 0.0421),  # 42 µs stays 42 µs, not 0 ms
        (0.0009876, 0.000988),
        (0.5, 0.5),
        (1.23456, 1.23),
        (147.3, 147.0),
        (3432.0, 3430.0),
        (0.0, 0.0),
    ],
)
def test_bucketing_keeps_three_significant_digits(response_ms: float, bucket: float) -> None:
    assert bucket_response_time(response_ms) == pytest.approx(bucket)


@pytest.mark.parametrize(
    ("value_ms", "text"),
    [(0.0421, "42 µs"), (0.0042, "4.2 µs"), (0.999, "999 µs"), (1.5, "1.50 ms"), (250.0, "250 ms")],
)
def test_latencies_under_a_millisecond_are_shown_in_microseconds(
    value_ms: float, text: str
) -> None:
    assert format_ms(value_ms) == text
    assert format_ms(value_ms) != "0 ms"


def test_record_counts_only_inside_the_window_and_drains() -> None:
    record = LatencyRecord()
    record.add(1_000)  # before the window: ignored
    record.recording = True
    for sample in (30_000, 40_000, 50_000, 2_000_000):
        record.add(sample, wait_ns=100)
    record.add_error("boom")
    summary = record.summary(window_s=2.0)
    assert summary["requests"] == 4
    assert summary["errors"] == 1
    assert summary["error_ratio"] == pytest.approx(0.2)
    assert summary["rps"] == pytest.approx(2.0)
    assert summary["round_trip"]["p50_ms"] == pytest.approx(0.04)  # 40 µs, exactly
    assert summary["round_trip"]["p99_ms"] == pytest.approx(2.0)
    chunk = record.drain()
    assert record.summary(1.0)["requests"] == 0
    other = LatencyRecord()
    other.merge(chunk)
    other.merge(chunk)
    assert other.summary(1.0)["requests"] == 8
    assert other.error_kinds == {"boom": 2}


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([], 50) == 0


def _encoded_size(profile: str, codec: str) -> int:
    return make_templates(profile, codec)[0].frame_size


def test_profile_sizes_match_their_names() -> None:
    assert 60 <= _encoded_size("small", "json") <= 200
    assert 0.9e6 <= _encoded_size("structured", "json") <= 1.2e6
    binary = load_profile("binary")[0][1]["data"]
    assert isinstance(binary, bytes)
    assert len(binary) == 1024 * 1024
    # Base64 under JSON (4/3 the size), raw bytes under MessagePack.
    assert _encoded_size("binary", "json") > 1.33 * 1024 * 1024
    assert 1024 * 1024 < _encoded_size("binary", "msgpack") < 1.01 * 1024 * 1024


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize("profile", ["ping", "small", "binary"])
def test_templates_splice_the_request_id(codec: str, profile: str) -> None:
    template = make_templates(profile, codec)[0]
    frame = template.frame(next_id(12345))
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    payload = frame[4:]
    decoded = json.loads(payload) if codec == "json" else msgpack.unpackb(payload)
    assert decoded["id"] == ID_BASE + 12345
    assert decoded["command"] == load_profile(profile)[0][0]
    if profile == "binary":
        data = decoded["args"]["data"]
        assert (base64.b64decode(data) if codec == "json" else data) == load_profile("binary")[0][
            1
        ]["data"]


def _response(codec: str, envelope: dict[str, Any]) -> bytes:
    return (
        json.dumps(envelope).encode()
        if codec == "json"
        else msgpack.packb(envelope, use_bin_type=True)
    )


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize("large", [False, True])
def test_response_checks_catch_wrong_ids_and_failures(codec: str, large: bool) -> None:
    template = make_templates("small", codec)[0]
    rid = next_id(7)
    filler = "x" * (100_000 if large else 10)
    ok = {"result": {"echoed": filler}, "id": rid, "success": True, "timestamp": "t"}
    assert check_response(codec, _response(codec, ok), template, rid) is None
    wrong_id = dict(ok, id=rid + 1)
    assert "does not match" in (
        check_response(codec, _response(codec, wrong_id), template, rid) or ""
    )
    failed = {"id": rid, "success": False, "error": "it broke", "timestamp": "t", "pad": filler}
    assert "it broke" in (check_response(codec, _response(codec, failed), template, rid) or "")


def test_raw_check_compares_lengths() -> None:
    template = make_templates("small", "raw")[0]
    frame = template.frame(next_id(1))
    assert check_response("raw", frame[4:], template, next_id(1)) is None
    assert check_response("raw", frame[4:-1], template, next_id(1)) is not None


def test_request_file_profile_with_bytes(tmp_path: Path) -> None:
    path = tmp_path / "requests.json"
    path.write_text(
        json.dumps(
            [
                {
                    "command": "echo",
                    "args": {"blob": {"$bytes": base64.b64encode(b"\0\1").decode()}},
                },
                {"command": "ping"},
            ]
        )
    )
    requests = load_profile(f"file:{path}")
    assert requests == [("echo", {"blob": b"\0\1"}), ("ping", {})]
    templates = make_templates(f"file:{path}", "msgpack")
    assert [t.command for t in templates] == ["echo", "ping"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "empty list"),
        ('{"args": {}}', 'string "command"'),
        ('{"command": "x", "args": []}', '"args" must be an object'),
        ('{"command": "x", "args": {"b": {"$bytes": "!!"}}}', "not base64"),
    ],
)
def test_bad_request_files_say_what_is_wrong(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "requests.json"
    path.write_text(content)
    with pytest.raises(ProfileError, match=message):
        load_profile(f"file:{path}")


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ProfileError, match="small"):
        load_profile("huge")


def test_raw_echo_worker_echoes_frames_of_any_size() -> None:
    frames = [os.urandom(n) for n in (1, 3, 100, 70_000, 1024 * 1024, 5, 2 * 1024 * 1024)]
    wire = b"".join(len(f).to_bytes(4, "big") + f for f in frames)
    done = subprocess.run(
        baseline_command("stdio"), input=wire, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0
    assert done.stdout == wire


def _result(
    kind: str, pool: int, codec: str, payload: str, rps: float, p50: float
) -> dict[str, Any]:
    return {
        "config": {
            "kind": kind,
            "transport": "stdio",
            "pool": pool,
            "codec": codec,
            "payload": payload,
            "users": 8,
        },
        "error": None,
        "requests": int(rps * 5),
        "errors": 0,
        "error_ratio": 0.0,
        "error_kinds": {},
        "rps": rps,
        "round_trip": {"p50_ms": p50, "p95_ms": p50 * 2, "p99_ms": p50 * 3, "mean_ms": p50},
        "checkout_wait": {"p50_ms": 0.001, "p99_ms": 0.01},
        "first_message": {},
        "startup_s": 0.1 * pool,
        "bridge_cpu_pct": 50.0,
        "loadgen_cpu_pct": 95.0 if payload == "small" else 40.0,
        "rss_samples": [[0.0, 10e6], [5.0, 12e6]],
        "restarts": 0,
    }


SYNTHETIC = [
    _result("baseline", 1, "raw", "binary", 500, 1.0),
    _result("bridge", 1, "json", "binary", 50, 20.0),
    _result("bridge", 1, "msgpack", "binary", 400, 1.2),
    _result("bridge", 2, "json", "binary", 90, 22.0),
    _result("bridge", 2, "msgpack", "binary", 700, 1.4),
    _result("bridge", 4, "json", "binary", 92, 40.0),
    _result("bridge", 4, "msgpack", "binary", 710, 2.8),
    _result("bridge", 1, "json", "small", 3000, 0.05),
    _result("bridge", 1, "msgpack", "small", 3100, 0.045),
]


def test_recommendation_follows_the_numbers() -> None:
    report = build_report(SYNTHETIC, Gates(), {"sample_interval_s": 0})
    pools = report["recommendation"]["pools"]
    # 700 is within 5% of 710, so pool 2 is enough for msgpack; json likewise (90 vs 92).
    assert pools["binary/msgpack"]["pool"] == 2
    assert pools["binary/json"]["pool"] == 2
    binary = report["recommendation"]["codecs"]["binary"]
    assert binary["codec"] == "msgpack"
    assert binary["rps_ratio"] == pytest.approx(700 / 90)
    assert binary["json_over_msgpack_p50"] == pytest.approx(20.0 / 1.2)
    assert binary["claim_2_3x"].startswith("confirmed")
    row = next(r for r in report["rows"] if r["codec"] == "msgpack" and r["pool"] == 1)
    assert row["p50_vs_raw"] == pytest.approx(1.2)
    text = render_table(report)
    assert "use msgpack with a pool of 2" in text
    assert "within one run's noise" in text  # small: 3100 vs 3000 req/s
    assert "45 µs" in text  # the small payload's sub-ms median, not "0 ms"
    assert "load generator used up to 95%" in text


def test_gates_report_each_breach() -> None:
    report = build_report(
        SYNTHETIC,
        Gates(max_p99_ms=10, min_rps=60, max_error_ratio=0.0),
        {"sample_interval_s": 0},
    )
    breaches = report["breaches"]
    assert any("p99" in b and "codec=json" in b for b in breaches)
    assert any("req/s" in b and "pool=1 codec=json payload=binary" in b for b in breaches)
    assert not any("raw" in b for b in breaches)  # the baseline is never gated


def test_html_and_csv_carry_the_same_points(tmp_path: Path) -> None:
    report = build_report(SYNTHETIC, Gates(), {"sample_interval_s": 1.0, "bridge_cmd": ["b"]})
    html = render_html(report)
    assert html.count("<svg") == 2
    # One line per codec x payload (4) plus the binary baseline, in each of 2 plots.
    assert html.count("<polyline") == 2 * 5
    assert "binary · msgpack" in html
    written = write_csv(report, tmp_path)
    rows = (tmp_path / "points.csv").read_text().splitlines()
    assert len(rows) == 1 + len(SYNTHETIC)
    assert "p99_ms" in rows[0]
    assert tmp_path / "soak.csv" in written
    assert report["soak"][0]["growth_mb"] == pytest.approx(2e6 / 2**20)


def test_load_help_needs_no_locust_import() -> None:
    code = (
        "import sys; from snakepit_harness.cli import build_parser; build_parser(); "
        "print('locust' in sys.modules, 'gevent' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False False"


def test_a_full_machine_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    report = build_report(SYNTHETIC, Gates(), {"sample_interval_s": 0})
    assert any("machine is full" in w for w in report["warnings"])
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    report = build_report(SYNTHETIC, Gates(), {"sample_interval_s": 0})
    assert not any("machine is full" in w for w in report["warnings"])


def test_long_runs_keep_a_bounded_uniform_sample_and_exact_counts() -> None:
    record = LatencyRecord(max_samples=500)
    record.recording = True
    for value in range(20_000):
        record.add(value * 1000, wait_ns=1)
    summary = record.summary(window_s=1.0)
    assert summary["requests"] == 20_000
    assert summary["samples_kept"] == 500
    assert 7_000 <= summary["round_trip"]["p50_ms"] * 1000 <= 13_000  # true median: 10,000 µs
    merged = LatencyRecord(max_samples=500)
    merged.merge(record.drain())
    assert merged.summary(1.0)["requests"] == 20_000


@pytest.mark.parametrize(
    ("pool", "processes", "shares"),
    [
        (1, 2, [(1, 0), (0, 1)]),  # more processes than workers: one drives nothing
        (2, 2, [(1, 0), (1, 1)]),
        (5, 2, [(3, 0), (2, 3)]),
        (4, 3, [(2, 0), (1, 2), (1, 3)]),
    ],
)
def test_generator_processes_share_the_pool_out(
    pool: int, processes: int, shares: list[tuple[int, int]]
) -> None:
    config = PointConfig(
        kind="bridge",
        transport="stdio",
        bridge_cmd=["b"],
        pool=pool,
        codec="msgpack",
        payload="small",
        users=4,
        warmup_s=0,
        duration_s=1,
        generator_processes=processes,
        split_pool=True,
    )
    assert [config.pool_share(i) for i in range(processes)] == shares
    assert sum(size for size, _ in shares) == pool
    # Distributed workers each run a whole pool.
    config.split_pool = False
    assert config.pool_share(1) == (pool, 0)


def test_auto_generator_processes_follow_the_machine() -> None:
    assert [auto_generator_processes(pool, 2) for pool in (1, 2, 4)] == [1, 2, 2]
    assert [auto_generator_processes(pool, 16) for pool in (1, 4, 16, 32)] == [1, 4, 16, 16]
    assert auto_generator_processes(4, 1) == 1
    options = SweepOptions(bridge_cmd=["b"], pools=[1, 2], codecs=["msgpack"])
    options.generator_processes = 2
    points = plan(options)
    assert {(p.generator_processes, p.split_pool, p.expect_nodes) for p in points} == {(2, True, 2)}
    options.generator_processes = 1
    assert {(p.split_pool, p.expect_nodes) for p in plan(options)} == {(False, 1)}
    master = SweepOptions(bridge_cmd=["b"], master=True, expect_workers=3)
    assert {(p.generator_processes, p.split_pool) for p in plan(master)} == {(3, False)}


def _bound(result: dict[str, Any], pct: float) -> dict[str, Any]:
    return dict(result, loadgen_cpu_pct=pct, loadgen_cpu_pct_per_node=[pct, 10.0])


def test_generator_bound_points_never_drive_the_recommendation() -> None:
    results = [
        _bound(_result("bridge", 1, "msgpack", "small", 1000, 0.05), 30.0),
        # The best throughput, but one generator process was saturated there.
        _bound(_result("bridge", 2, "msgpack", "small", 1500, 0.05), 90.0),
        _bound(_result("bridge", 1, "msgpack", "binary", 400, 1.2), 40.0),
        _bound(_result("bridge", 2, "msgpack", "binary", 700, 1.4), 40.0),
    ]
    report = build_report(results, Gates(), {"sample_interval_s": 0})
    rows = report["rows"]
    assert [r["generator_bound"] for r in rows] == [False, True, False, False]
    recommendation = report["recommendation"]
    assert "small/msgpack" not in recommendation["pools"]
    assert "small" not in recommendation["codecs"]
    assert recommendation["refused"]["small"]["bound_at"] == ["pool 2 msgpack"]
    assert recommendation["pools"]["binary/msgpack"]["pool"] == 2
    text = render_table(report)
    assert "payload small: no recommendation: the load generator was the limit" in text
    assert "--generator-processes N" in text and "--master/--worker" in text
    assert "use msgpack with a pool of 2" in text  # binary: the generator had headroom
    assert "gen bound" in text.splitlines()[0]


def test_rows_carry_the_generator_fields_in_json_and_csv(tmp_path: Path) -> None:
    result = dict(
        _result("baseline", 1, "raw", "small", 40_000, 0.02),
        generator_processes=2,
        generator_cpu_us_per_request=12.5,
        loadgen_cpu_pct_per_node=[50.0, 1.0],
        coordinator_cpu_pct=2.0,
    )
    report = build_report([result], Gates(), {"sample_interval_s": 0})
    (row,) = report["rows"]
    assert (row["generator_processes"], row["generator_cpu_us_per_request"]) == (2, 12.5)
    assert row["generator_bound"] is False
    write_csv(report, tmp_path)
    header, line = (tmp_path / "points.csv").read_text().splitlines()
    values = dict(zip(header.split(","), line.split(","), strict=True))
    assert (values["generator_processes"], values["generator_bound"]) == ("2", "False")
    assert float(values["generator_cpu_us_per_request"]) == 12.5


def test_samples_travel_as_array_bytes_in_either_byte_order() -> None:
    record = LatencyRecord()
    record.recording = True
    for value in (5, 7, 2**40):
        record.add(value, wait_ns=1)
    chunk = record.drain()
    assert isinstance(chunk["round_trip_ns"], bytes)
    swapped = array("q", [5, 7, 2**40])
    swapped.byteswap()
    foreign = dict(
        chunk,
        byteorder="big" if sys.byteorder == "little" else "little",
        round_trip_ns=swapped.tobytes(),
    )
    merged = LatencyRecord()
    merged.merge(chunk)
    merged.merge(foreign)
    assert sorted(merged.round_trip_ns) == [5, 5, 7, 7, 2**40, 2**40]


def test_bridge_service_call_planning_lists_the_tools_it_can_make_arguments_for() -> None:
    from snakepit_harness.loadtests.bridge_calls import MAX_CANDIDATES, _candidates

    from snakepit_harness.errors import HarnessError
    from snakepit_harness.protocol.bridge_service import ParamInfo, ToolInfo, example_value

    opaque = ToolInfo("train", (ParamInfo("model", "MyModel", required=True),))
    simple = ToolInfo("score", (ParamInfo("n", "integer", required=True),))
    streams = ToolInfo("tail", (ParamInfo("model", "MyModel", required=True),), streaming=True)
    echo = ToolInfo("echo", (ParamInfo("message", "string", required=True),))
    tools = {t.name: t for t in (opaque, simple, streams)}
    ((chosen, arguments, how),) = _candidates("call", tools, None, {})
    assert chosen is simple and set(arguments) == {"n"} and "example values" in how
    # An echo whose parameter is not `value` is called like any tool, not with the profile.
    with_echo = {"echo": echo, **tools}
    assert [c[0].name for c in _candidates("call", with_echo, None, {})] == ["echo", "score"]
    assert _candidates("call", with_echo, None, {})[0][1] == {"message": example_value("string")}
    # A --tool-calls file names what the harness cannot invent, and then it is the only one.
    ((chosen, arguments, _),) = _candidates("call", tools, "train", {"train": [{"model": "m1"}]})
    assert (chosen, arguments) == (opaque, {"model": "m1"})
    many = {f"t{i}": ToolInfo(f"t{i}") for i in range(MAX_CANDIDATES + 3)}
    assert len(_candidates("call", many, None, {})) == MAX_CANDIDATES
    with pytest.raises(HarnessError, match="--tool-calls FILE"):
        _candidates("stream", tools, None, {})
    with pytest.raises(HarnessError, match="streams: load it with --payload stream"):
        _candidates("call", tools, "tail", {})
    with pytest.raises(HarnessError, match="echo\\(value\\) tool"):
        _candidates("small", with_echo, None, {})
