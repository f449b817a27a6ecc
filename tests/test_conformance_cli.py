"""The conformance, replay and check subcommands as a user meets them: exit codes, listing,
reports that parse, baselines that go stale, reproduction lines."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from snakepit_harness.conformance.baseline import BaselineError, load_baseline

from snakepit_harness.cli import main

TINY = Path(__file__).parent / "bridges" / "tiny_bridge.py"


def tiny(*defects: str, protocol: str = "json") -> list[str]:
    cmd = [sys.executable, str(TINY), "--protocol", protocol, "--quiet"]
    for defect in defects:
        cmd += ["--defect", defect]
    return cmd


def conformance(*options: str, bridge: list[str]) -> int:
    return main(["conformance", "--timeout", "5", *options, "--", *bridge])


def test_list_shows_every_case_with_section_level_and_profiles(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["conformance", "--list"]) == 0
    out = capsys.readouterr().out
    line = next(li for li in out.splitlines() if li.startswith("messages.unknown-command "))
    assert "§4.4" in line and "required" in line and "v1,v2" in line
    assert "An unknown command is answered" in line
    assert "framing.oversize-header" in out and "(gate)" in out


def test_good_bridge_exits_0_and_writes_every_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junit, js, page = tmp_path / "r.xml", tmp_path / "r.json", tmp_path / "r.html"
    code = conformance(
        "--profile",
        "v2",
        "--case",
        "commands.*",
        "--case",
        "messages.id-*",
        "--junit",
        str(junit),
        "--json",
        str(js),
        "--html",
        str(page),
        bridge=tiny(),
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "CONFORMS" in out and "commands.compute.divide" in out

    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert {s.get("name") for s in suites} >= {"v2/json §6.3", "v2/json §4.2"}
    total = 0
    for suite in suites:
        cases = suite.findall("testcase")
        assert int(suite.get("tests", "-1")) == len(cases)
        for case in cases:
            assert case.get("name") and case.get("classname", "").startswith("snakepit.v2.json.")
            assert float(case.get("time", "x")) >= 0
        total += len(cases)
    assert int(root.get("tests", "-1")) == total
    assert root.get("failures") == "0"

    data = json.loads(js.read_text())
    assert data["exit_code"] == 0 and data["profile"] == "v2"
    assert {r["verdict"] for r in data["results"]} == {"PASS"}
    assert len(data["results"]) == total

    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "commands.compute.add" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html


def test_failure_exits_1_and_prints_bytes_stderr_and_reproduction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junit = tmp_path / "r.xml"
    code = conformance(
        "--profile",
        "v2",
        "--case",
        "messages.id-*",
        "--junit",
        str(junit),
        bridge=tiny("no-id-echo"),
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "--- FAIL messages.id-string" in out
    assert "sent (hex): 0000" in out
    assert "$ snakepit-harness replay messages.id-string --profile v2 --codec json -- " in out
    assert "| xxd" in out and "printf '\\000\\000\\000" in out
    failures = ET.parse(junit).getroot().iter("failure")
    messages = [f.get("message", "") for f in failures]
    assert any(m.startswith("FAIL: ") for m in messages)


def test_harness_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Zero cases selected.
    assert conformance("--profile", "v2", "--case", "no.such-*", bridge=tiny()) == 2
    # A bridge that cannot be started.
    assert conformance("--profile", "v2", bridge=[str(tmp_path / "missing-bridge")]) == 2
    # No bridge at all, no profile.
    assert main(["conformance", "--profile", "v2"]) == 2
    assert main(["conformance", "--", *tiny()]) == 2
    err = capsys.readouterr().err
    assert "not an executable" in err and "--profile is required" in err


def test_strict_makes_non_strict_fail(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--profile", "v2", "--case", "messages.unknown-command")
    assert conformance(*args, bridge=tiny("legacy-unknown")) == 0
    assert conformance(*args, "--strict", bridge=tiny("legacy-unknown")) == 1
    assert "legacy form" in capsys.readouterr().out


def test_update_baseline_then_xfail_then_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = tmp_path / "known.yaml"
    # Refused on a filtered run.
    assert (
        conformance(
            "--profile",
            "v1",
            "--baseline",
            str(baseline),
            "--update-baseline",
            "--case",
            "messages.*",
            bridge=tiny("no-id-echo"),
        )
        == 2
    )
    assert not baseline.exists()
    # Written from a whole run; the run then counts as passing.
    assert (
        conformance(
            "--profile",
            "v1",
            "--baseline",
            str(baseline),
            "--update-baseline",
            bridge=tiny("no-id-echo"),
        )
        == 0
    )
    entries = load_baseline(baseline)
    assert set(entries) == {
        "framing.split-writes",
        "messages.id-integer",
        "messages.id-string",
        "messages.id-numeric-string",
        "messages.id-large-integer",
        "messages.unknown-command",
    }
    assert baseline.read_text().startswith("# snakepit-harness conformance baseline")
    # Known failures are XFAIL: exit 0.
    capsys.readouterr()
    assert (
        conformance(
            "--profile",
            "v1",
            "--baseline",
            str(baseline),
            "--case",
            "messages.*",
            bridge=tiny("no-id-echo"),
        )
        == 0
    )
    assert "XFAIL" in capsys.readouterr().out
    # Fixed bridge: the entries are stale, the run fails.
    assert (
        conformance(
            "--profile",
            "v1",
            "--baseline",
            str(baseline),
            "--case",
            "messages.id-*",
            bridge=tiny(),
        )
        == 1
    )
    assert "STALE" in capsys.readouterr().out


def test_baseline_formats_and_errors(tmp_path: Path) -> None:
    yaml_file = tmp_path / "b.yaml"
    yaml_file.write_text("# comment\nversion: 1\nfailures:\n  framing.flush: our writer buffers\n")
    assert load_baseline(yaml_file) == {"framing.flush": "our writer buffers"}
    json_file = tmp_path / "b.json"
    json_file.write_text(json.dumps({"failures": [{"id": "x.y", "reason": "why"}]}))
    assert load_baseline(json_file) == {"x.y": "why"}
    json_file.write_text(json.dumps({"failures": [{"id": "x.y"}]}))
    with pytest.raises(BaselineError, match="needs a `reason`"):
        load_baseline(json_file)
    json_file.write_text(json.dumps([1, 2]))
    with pytest.raises(BaselineError, match="failures"):
        load_baseline(json_file)


def test_unknown_baseline_id_is_stale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline = tmp_path / "b.json"
    baseline.write_text(json.dumps({"failures": [{"id": "messages.no-such", "reason": "typo"}]}))
    code = conformance(
        "--profile",
        "v2",
        "--case",
        "commands.echo.empty",
        "--baseline",
        str(baseline),
        bridge=tiny(),
    )
    assert code == 1
    assert "no such case exists" in capsys.readouterr().out


def test_replay_by_id_and_by_golden_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "messages.id-string", "--", *tiny()]) == 0
    out = capsys.readouterr().out
    assert "PASS messages.id-string" in out and "received frame" in out

    regression = tmp_path / "fuzz.0badc0de.json"
    regression.write_text(
        json.dumps(
            {
                "format": "snakepit-golden/1",
                "id": "fuzz.0badc0de",
                "section": "4.3",
                "level": "required",
                "profiles": ["v2"],
                "bridge": "fresh",
                "requirement": "After these mutated bytes the bridge still answers a ping.",
                "steps": [{"send_raw": {"any": "000000057b22696422"}}, {"alive": {}}],
            }
        )
    )
    assert main(["replay", str(regression), "--", *tiny()]) == 0
    assert main(["replay", str(regression), "--", *tiny("crash-on-malformed")]) == 1
    out = capsys.readouterr().out
    assert "CRASH fuzz.0badc0de" in out and "exit status 3" in out
    assert main(["replay", "no.such-case", "--", *tiny()]) == 2


def test_golden_dir_adds_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "extra.json").write_text(
        json.dumps(
            {
                "format": "snakepit-golden/1",
                "id": "extra.echo-number",
                "section": "6.2",
                "level": "required",
                "profiles": ["v2"],
                "requirement": "echo returns a number.",
                "steps": [
                    {"send": {"id": 5, "command": "echo", "args": {"n": 1}}},
                    {"expect": {"match": {"result": {"echoed": {"n": 2}}}}},
                ],
            }
        )
    )
    code = conformance(
        "--profile", "v2", "--golden-dir", str(tmp_path), "--case", "extra.*", bridge=tiny()
    )
    assert code == 1
    assert "$.result.echoed.n: expected 2, got 1" in capsys.readouterr().out
    # The extra directory's cases belong to that run only, not to later runs in
    # the same process.
    from snakepit_harness.conformance import all_cases

    assert "extra.echo-number" not in {c.id for c in all_cases()}
    assert "extra.echo-number" in {c.id for c in all_cases([tmp_path])}


def test_check_with_a_bridge_prints_one_table(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "--profile", "v1", "--", *tiny()])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "bridge / profile / codec" in out
    assert "tiny_bridge.py v1/json" in out and "CONFORMS" in out


def test_check_splits_long_profiles_and_merges_in_case_order() -> None:
    from snakepit_harness.conformance import (
        Case,
        CaseResult,
        Level,
        RunSettings,
        Verdict,
        all_cases,
    )
    from snakepit_harness.conformance.check import _chunks, _merge_parts
    from snakepit_harness.conformance.session import RunReport

    settings = RunSettings(("bridge",), profile="enhanced")
    parts = _chunks(settings, all_cases())
    mine = [c for c in all_cases() if "enhanced" in c.profiles and c.transport == "stdio"]
    assert len(parts) >= 2
    assert sorted(c.id for p in parts for c in p) == sorted(c.id for c in mine)
    assert all(c.gate for c in parts[0][:3]) and not any(c.gate for c in parts[1])

    def report(part: list[Case], verdict: Verdict) -> RunReport:
        results = [CaseResult(c.id, c.section, Level.REQUIRED, "", verdict) for c in part]
        return RunReport(settings, results)

    merged = _merge_parts(
        {(0, 0): report(parts[0], Verdict.PASS), (0, 1): report(parts[1], Verdict.PASS)}, {}
    )
    order = [c.id for c in all_cases()]
    ids = [r.case_id for r in merged[0].results]
    assert ids == sorted(ids, key=order.index)
    # A failed gate in part 0 blocks the other parts, as in a single run.
    first = report(parts[0], Verdict.PASS)
    first.results[0].verdict = Verdict.FAIL
    merged = _merge_parts({(0, 0): first, (0, 1): report(parts[1], Verdict.PASS)}, {})
    later = {r.case_id: r for r in merged[0].results}
    assert later[parts[1][0].id].verdict is Verdict.SKIP


@pytest.mark.parametrize("harness_codec", ["negotiate", "json"])
def test_a_bridge_started_in_msgpack_mode_is_one_startup_failure_naming_the_fix(
    harness_codec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The trap of issue 14.5: the user chose the codec on the bridge's command line."""
    report = tmp_path / "r.json"
    bridge = [sys.executable, "-m", "snakepit_bridge.generic_bridge_v2", "--protocol", "msgpack"]
    code = conformance(
        "--profile", "v2", "--codec", harness_codec, "--json", str(report), bridge=bridge
    )
    assert code == 1
    results = json.loads(report.read_text())["results"]
    failed = [r for r in results if r["verdict"] not in ("PASS", "SKIP")]
    assert [r["id"] for r in failed] == ["lifecycle.startup"]
    assert "msgpack" in failed[0]["message"]
    assert "--protocol" in failed[0]["message"] and "--codec" in failed[0]["message"]
    gates = {"lifecycle.startup", "framing.flush", "framing.stdout-clean"}
    others = [r for r in results if r["id"] not in gates]
    assert others and all(r["verdict"] == "SKIP" for r in others)
    assert any("blocked: gate case lifecycle.startup" in r["message"] for r in others)
