"""The gRPC conformance suite: passes on the reference bridge, in-process and by --target.

The broken samples in fixtures/grpc_bridges/ are run by
tests/test_meta_conformance.py, through the command line, with the samples of
every other profile; here the reference bridge runs the whole suite, strict.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

pytest.importorskip("grpc", reason="the grpc extra is not installed")
pytest.importorskip("grpc_health", reason="grpcio-health-checking is not installed")

from snakepit_harness.conformance.model import BridgeUse, RunSettings, Verdict
from snakepit_harness.conformance.registry import all_cases
from snakepit_harness.conformance.session import run_suite

from snakepit_harness.transports.grpc import GrpcBridge

REFERENCE = (sys.executable, "-m", "snakepit_bridge.grpc_bridge")


def grpc_cases() -> list[Any]:
    return [c for c in all_cases() if c.transport == "grpc"]


def settings(bridge_cmd: tuple[str, ...] = (), **overrides: Any) -> RunSettings:
    return RunSettings(
        bridge_cmd=bridge_cmd, profile="grpc", transport="grpc", strict=True, **overrides
    )


def test_cases_cover_every_section_of_the_grpc_profile() -> None:
    sections = {c.section for c in grpc_cases()}
    assert {"8.2", "8.3", "8.4", "8.5", "8.6", "8.7", "8.8", "8.9", "8.10"} <= sections
    assert {"6.1", "6.2", "6.3", "6.4"} <= sections
    assert all(c.profiles == frozenset({"grpc"}) for c in grpc_cases())


def test_reference_bridge_passes_the_whole_suite_strict() -> None:
    report = run_suite(settings(REFERENCE), grpc_cases())
    verdicts = {r.case_id: r.verdict for r in report.results}
    failing = {
        r.case_id: (r.verdict, r.message)
        for r in report.results
        if r.verdict not in (Verdict.PASS, Verdict.SKIP)
    }
    assert not failing
    # Only the enhanced-store case may skip (the default adapter has no store).
    assert [k for k, v in verdicts.items() if v is Verdict.SKIP] == ["grpc.session.store-scoped"]
    assert report.exit_code() == 0


def test_enhanced_adapter_is_servable_and_scopes_its_store_by_session() -> None:
    from snakepit_bridge.enhanced import EnhancedCommandHandler

    adapter = f"{EnhancedCommandHandler.__module__}:{EnhancedCommandHandler.__name__}"
    # The shared-bridge cases: start-up and SIGTERM do not depend on the adapter.
    shared = [c for c in grpc_cases() if c.bridge is BridgeUse.SHARED]
    report = run_suite(settings((*REFERENCE, "--adapter", adapter)), shared)
    verdicts = {r.case_id: r.verdict for r in report.results}
    # The bridge adds ping_stream & co. to an adapter without them (§8.5).
    assert verdicts["grpc.stream.ping-stream"] is Verdict.PASS
    assert verdicts["grpc.session.store-scoped"] is Verdict.PASS
    assert all(v is Verdict.PASS for v in verdicts.values()), {
        r.case_id: r.message for r in report.results if r.verdict is not Verdict.PASS
    }


def test_target_mode_runs_against_a_running_server_and_skips_process_cases() -> None:
    with GrpcBridge(list(REFERENCE)) as running:
        report = run_suite(settings(target=running.address), grpc_cases())
        verdicts = {r.case_id: r.verdict for r in report.results}
        assert running.poll() is None, "--target must not stop the server"
    for case_id in (
        "grpc.startup.ready-line",
        "grpc.startup.serving-when-ready",
        "grpc.startup.loopback",
        "grpc.lifecycle.sigterm",
    ):
        assert verdicts[case_id] is Verdict.SKIP, case_id
    assert verdicts["grpc.stream.final-message"] is Verdict.PASS
    assert report.exit_code() == 0


def test_unreachable_target_is_a_timeout_not_a_hang() -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    chosen = [c for c in grpc_cases() if c.id == "grpc.execute.ping"]
    report = run_suite(settings(target=f"127.0.0.1:{port}", timeout=1.0), chosen)
    [result] = report.results
    assert result.verdict is Verdict.TIMEOUT
    assert report.exit_code() == 1
