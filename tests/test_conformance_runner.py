"""The runner against real subprocess bridges: a correct tiny bridge conforms; each defect
gets the verdict it calls for on the case that owns it; supervision recovers after hangs and
crashes; nothing is left running."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from snakepit_harness.conformance import RunSettings, Verdict, all_cases, select_cases
from snakepit_harness.conformance.session import RunReport, run_suite

TINY = Path(__file__).parent / "bridges" / "tiny_bridge.py"


def tiny(*defects: str, protocol: str = "json") -> tuple[str, ...]:
    cmd = [sys.executable, str(TINY), "--protocol", protocol, "--quiet"]
    for defect in defects:
        cmd += ["--defect", defect]
    return tuple(cmd)


def run(
    cmd: tuple[str, ...],
    include: tuple[str, ...] = (),
    *,
    codec: str = "json",
    strict: bool = False,
    timeout: float = 5.0,
    startup_timeout: float = 5.0,
    baseline: dict[str, str] | None = None,
) -> RunReport:
    settings = RunSettings(
        bridge_cmd=cmd,
        profile="v2",
        codec=codec,
        strict=strict,
        timeout=timeout,
        startup_timeout=startup_timeout,
    )
    cases = select_cases(all_cases(), include)
    return run_suite(settings, cases, baseline=baseline, known_ids={c.id for c in all_cases()})


def verdicts(report: RunReport) -> dict[str, Verdict]:
    return {r.case_id: r.verdict for r in report.results}


# msgpack from the first frame is covered by the negotiate run (which selects it)
# and by the reference bridges' check; two whole runs keep this file quick.
@pytest.mark.parametrize(("codec", "protocol"), [("json", "json"), ("negotiate", "auto")])
def test_correct_tiny_bridge_conforms_strictly(codec: str, protocol: str) -> None:
    report = run(tiny(protocol=protocol), codec=codec, strict=True)
    bad = {
        r.case_id: (r.verdict, r.message)
        for r in report.results
        if r.verdict not in (Verdict.PASS, Verdict.SKIP)
    }
    assert bad == {}
    assert report.exit_code() == 0
    assert sum(r.verdict is Verdict.PASS for r in report.results) >= 50
    if codec == "negotiate":
        assert report.negotiated == "msgpack"


# (defect, cases to run, the case that must fail, its verdict)
DEFECTS = [
    ("no-id-echo", ("messages.id-*", "commands.compute.add"), "messages.id-integer", Verdict.FAIL),
    (
        "crash-on-malformed",
        ("messages.malformed.not-object",),
        "messages.malformed.not-object",
        Verdict.CRASH,
    ),
    (
        "legacy-unknown",
        ("messages.unknown-command",),
        "messages.unknown-command",
        Verdict.NON_STRICT,
    ),
    ("nan", ("messages.unencodable-result",), "messages.unencodable-result", Verdict.FAIL),
    ("ignore-sigterm", ("lifecycle.sigterm",), "lifecycle.sigterm", Verdict.FAIL),
    ("spawn-child", ("lifecycle.sigint",), "lifecycle.sigint", Verdict.FAIL),
    ("alloc-oversize", ("framing.oversize-header",), "framing.oversize-header", Verdict.FAIL),
    ("double-answer", ("messages.pipelining",), "messages.pipelining", Verdict.FAIL),
    (
        "cut-on-sigterm",
        ("lifecycle.sigterm-mid-response",),
        "lifecycle.sigterm-mid-response",
        Verdict.NON_STRICT,
    ),
]


@pytest.mark.parametrize(
    ("defect", "include", "case_id", "verdict"), DEFECTS, ids=[d[0] for d in DEFECTS]
)
def test_each_defect_fails_its_own_case(
    defect: str, include: tuple[str, ...], case_id: str, verdict: Verdict
) -> None:
    report = run(tiny(defect), include)
    got = verdicts(report)
    assert got[case_id] is verdict, report.results
    assert report.exit_code() == (0 if verdict is Verdict.NON_STRICT else 1)
    failed = next(r for r in report.results if r.case_id == case_id)
    assert failed.message
    assert failed.reproduction[0].startswith(f"snakepit-harness replay {case_id} ")
    if defect == "no-id-echo":
        # Only the id cases fail: compute does not care about ids.
        assert got["commands.compute.add"] is Verdict.PASS


def test_silence_on_malformed_input_is_non_strict_not_timeout() -> None:
    """§4.3: answering a malformed frame is a SHOULD; keeping serving is the MUST."""
    report = run(tiny("silent-on-malformed"), ("messages.malformed.*", "framing.zero-length"))
    got = verdicts(report)
    assert len(got) == 8
    assert set(got.values()) == {Verdict.NON_STRICT}, report.results
    assert report.exit_code() == 0
    # NON-STRICT everywhere means no case ran into its deadline (that is TIMEOUT).


def test_non_strict_fails_the_run_only_under_strict() -> None:
    assert run(tiny("legacy-unknown"), ("messages.unknown-command",)).exit_code() == 0
    assert run(tiny("legacy-unknown"), ("messages.unknown-command",), strict=True).exit_code() == 1


def test_stdout_pollution_is_framing_and_blocks_the_rest() -> None:
    report = run(tiny("stdout-banner"), ("framing.*", "lifecycle.startup", "commands.echo.empty"))
    got = verdicts(report)
    assert got["framing.stdout-clean"] is Verdict.FRAMING
    result = next(r for r in report.results if r.case_id == "framing.stdout-clean")
    assert "74696e7920627269646765" in "\n".join(result.observed)  # b"tiny bridge" in hex
    assert got["commands.echo.empty"] is Verdict.SKIP
    assert "blocked" in next(
        r.message for r in report.results if r.case_id == "commands.echo.empty"
    )
    assert report.exit_code() == 1


def test_unflushed_answers_fail_the_flush_gate() -> None:
    report = run(tiny("no-flush"), ("framing.flush", "lifecycle.startup"), startup_timeout=1.0)
    got = verdicts(report)
    assert got["framing.flush"] is Verdict.FAIL
    assert "flush" in next(r.message for r in report.results if r.case_id == "framing.flush")
    assert got["lifecycle.startup"] is Verdict.SKIP


def test_hang_is_timeout_then_next_case_gets_a_fresh_bridge() -> None:
    report = run(
        tiny("hang-on-unknown"),
        ("messages.unknown-command", "messages.id-integer", "commands.echo.empty"),
        timeout=1.0,
    )
    got = verdicts(report)
    assert got["messages.unknown-command"] is Verdict.TIMEOUT
    assert got["messages.id-integer"] is Verdict.PASS
    assert got["commands.echo.empty"] is Verdict.PASS
    hung = next(r for r in report.results if r.case_id == "messages.unknown-command")
    assert "no complete response within" in hung.message


def test_crash_reports_exit_status_and_stderr_and_recovers() -> None:
    report = run(
        tiny("crash-on-malformed"),
        ("messages.malformed.undecodable", "messages.id-string"),
    )
    crashed = next(r for r in report.results if r.case_id == "messages.malformed.undecodable")
    assert crashed.verdict is Verdict.CRASH
    assert "exit status 3" in crashed.message
    assert crashed.sent_hex  # the bytes sent are reported
    assert verdicts(report)["messages.id-string"] is Verdict.PASS


def test_baseline_turns_failures_into_xfail_and_passes_into_stale() -> None:
    baseline = {
        "messages.id-integer": "ids are not echoed yet",
        "commands.echo.empty": "listed but passes",
        "no.such-case": "typo",
    }
    report = run(
        tiny("no-id-echo"), ("messages.id-integer", "commands.echo.empty"), baseline=baseline
    )
    got = verdicts(report)
    assert got["messages.id-integer"] is Verdict.XFAIL
    assert got["commands.echo.empty"] is Verdict.STALE
    assert got["no.such-case"] is Verdict.STALE
    assert report.exit_code() == 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2] != "Z"


def test_nothing_outlives_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINY_BRIDGE_PIDFILE_DIR", str(tmp_path))
    run(tiny("spawn-child"), ("lifecycle.sigterm", "messages.pipelining", "framing.eof-*"))
    pids = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
    assert len(pids) > 4
    deadline = time.monotonic() + 3
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in pids if _alive(p)] == []


# Runs the rest of its command line with SIGINT ignored (exec keeps that), as
# a shell without job control starts a background command (POSIX).
IGNORING_SIGINT = (
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
)


def test_interrupting_the_harness_kills_every_bridge(tmp_path: Path) -> None:
    """Ctrl-C and SIGTERM to a running `conformance` leave no process behind; exit 130.

    Also when the harness was started with SIGINT ignored (a background job
    of a script): a CI run launched that way once hung here for good.
    """
    import subprocess

    for sig, started_ignoring_sigint in (
        (signal.SIGINT, False),
        (signal.SIGTERM, False),
        (signal.SIGINT, True),
    ):
        pid_dir = tmp_path / f"{sig.name}-{started_ignoring_sigint}"
        pid_dir.mkdir()
        env = {**os.environ, "TINY_BRIDGE_PIDFILE_DIR": str(pid_dir)}
        launcher = IGNORING_SIGINT if started_ignoring_sigint else (sys.executable,)
        harness = subprocess.Popen(
            [
                *launcher,
                "-m",
                "snakepit_harness",
                "conformance",
                "--profile",
                "v2",
                "--case",
                "messages.unknown-command",
                "--timeout",
                "30",
                "--",
                *tiny("hang-on-unknown", "spawn-child"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 10
            while len(list(pid_dir.glob("*.pid"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # the case is now waiting on the hung answer
            harness.send_signal(sig)
            code = harness.wait(timeout=10)
        finally:
            if harness.poll() is None:
                harness.kill()
        assert code == 130, harness.stderr.read() if harness.stderr else ""
        pids = [int(p.read_text()) for p in pid_dir.glob("*.pid")]
        assert pids
        deadline = time.monotonic() + 3
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p for p in pids if _alive(p)] == []


def test_codec_mismatch_is_one_clear_startup_failure() -> None:
    """--codec msgpack against a bridge speaking JSON: one failure that says what to do."""
    report = run(
        tiny(protocol="json"), ("framing.*", "lifecycle.startup", "commands.info"), codec="msgpack"
    )
    got = verdicts(report)
    assert got["lifecycle.startup"] is Verdict.FAIL
    startup = next(r for r in report.results if r.case_id == "lifecycle.startup")
    assert "it is json" in startup.message and "--protocol msgpack" in startup.message
    assert got["commands.info"] is Verdict.SKIP
    assert got["framing.stdout-clean"] is Verdict.SKIP
