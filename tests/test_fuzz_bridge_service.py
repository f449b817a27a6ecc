"""``fuzz --profile bridge-service``: the reference holds; a planted defect is found and replays."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "grpc", reason="bridge-service workers speak gRPC: pip install 'snakepit-harness[grpc]'"
)
pytest.importorskip(
    "hypothesis", reason="fuzzing needs hypothesis: pip install 'snakepit-harness[fuzz]'"
)

from snakepit_harness.fuzz.defaults import DEFAULT_MAX_EXAMPLES
from snakepit_harness.fuzz.runner import FuzzSession

ROOT = Path(__file__).resolve().parent.parent
NO_FINAL_CHUNK = ROOT / "fixtures" / "bridge_service" / "no_final_chunk.py"
RUN_LIMIT = 180


def _session(argv: list[str], tmp_path: Path, seed: int, examples: int) -> FuzzSession:
    return FuzzSession(
        profile="bridge-service",
        codec_mode="json",
        argv=argv,
        seed=seed,
        max_examples=examples,
        save_failures=tmp_path,
        shrink_budget=20.0,
    )


def _replay(path: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snakepit_harness", "replay", str(path), "--", *argv],
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT,
        check=False,
    )


def test_reference_worker_holds(tmp_path: Path) -> None:
    (outcome,) = _session(["snakepit-bridge-worker"], tmp_path, seed=1, examples=40).run()
    assert outcome.prop.name == "bridge-service-calls"
    assert outcome.failure is None and outcome.error is None, outcome.failure
    assert outcome.examples > 0


def test_stream_without_final_chunk_is_found_and_replays(tmp_path: Path) -> None:
    broken = [sys.executable, str(NO_FINAL_CHUNK)]
    (outcome,) = _session(broken, tmp_path, seed=1, examples=DEFAULT_MAX_EXAMPLES).run()
    assert outcome.failure is not None
    assert any("is_final" in problem for problem in outcome.failure.problems)
    assert outcome.regression is not None
    assert outcome.regression.name.endswith(".bridge-service.json")
    failing = _replay(outcome.regression, broken)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "is_final" in failing.stdout
    passing = _replay(outcome.regression, ["snakepit-bridge-worker"])
    assert passing.returncode == 0, passing.stdout + passing.stderr


def test_a_worker_that_dies_on_deep_values_is_found_at_the_default_budget(
    tmp_path: Path,
) -> None:
    # The echo rule sends the size edge classes (depth to 100) to the worker's
    # echo tool; benchmarks/fuzz_catch_rate.py measures 10 seeds of this.
    deep_crash = [
        sys.executable,
        "-m",
        "snakepit_bridge.bridge_service",
        "--adapter",
        f"{ROOT / 'tests' / 'fuzz_bridges' / 'bs_adapters.py'}:DeepCrash",
    ]
    (outcome,) = _session(deep_crash, tmp_path, seed=2, examples=DEFAULT_MAX_EXAMPLES).run()
    assert outcome.failure is not None, f"not caught in {outcome.examples} examples"
    assert outcome.regression is not None
    failing = _replay(outcome.regression, deep_crash)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    passing = _replay(outcome.regression, ["snakepit-bridge-worker"])
    assert passing.returncode == 0, passing.stdout + passing.stderr
