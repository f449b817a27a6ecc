"""The enhanced bridge as a host meets it: a real subprocess, real frames, both codecs.

Covers the generic commands under JSON, MessagePack and negotiation, a
DSPy-style flow (a pipeline whose steps store results and pass them on by
``stored.NAME``), a pandas DataFrame coming back with its shape, the probe
table over the wire, memory given back to the OS after ``delete_stored``
(RSS), and the command-line options.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from snakepit_harness import get_codec
from snakepit_harness.transports import StdioBridge

from .test_enhanced_safety import PROBES, _fill

BRIDGE = (sys.executable, "-m", "snakepit_bridge.enhanced_bridge")
TIMEOUT = 30.0  # generous: the machine running the tests may be busy
ENHANCED = {
    "call",
    "store",
    "retrieve",
    "list_stored",
    "delete_stored",
    "clear_session",
    "pipeline",
    "inspect",
}
GENERIC = {"ping", "echo", "compute", "info"}


class Host:
    """One bridge process and the codec spoken to it."""

    def __init__(self, bridge: StdioBridge, codec: str) -> None:
        self.bridge = bridge
        self.codec = get_codec(codec)
        self._id = 0

    def send(self, command: str, **args: Any) -> dict[str, Any]:
        self._id += 1
        reply = self.bridge.request(
            {"id": self._id, "command": command, "args": args}, self.codec, TIMEOUT
        )
        assert isinstance(reply, dict) and reply["id"] == self._id, reply
        assert isinstance(reply.get("timestamp"), str)
        return reply

    def ok(self, command: str, **args: Any) -> dict[str, Any]:
        reply = self.send(command, **args)
        assert reply["success"] is True, reply
        result: dict[str, Any] = reply["result"]
        assert result["status"] == "ok"
        return result

    def fail(self, command: str, error_type: str, **args: Any) -> str:
        reply = self.send(command, **args)
        assert reply["success"] is False and reply["error_type"] == error_type, reply
        message: str = reply["error"]
        return message

    def rss(self) -> int:
        for line in Path(f"/proc/{self.bridge.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


@contextmanager
def host(codec: str = "json", *options: str, negotiate: bool = False) -> Iterator[Host]:
    argv = [*BRIDGE, *options] if negotiate else [*BRIDGE, "--protocol", codec, *options]
    with StdioBridge(argv) as bridge:
        if negotiate:
            offer = {
                "type": "protocol_negotiation",
                "supported": ["msgpack", "json"],
                "preferred": codec,
            }
            answer = bridge.request(offer, get_codec("json"), TIMEOUT)
            assert answer == {"type": "protocol_selected", "protocol": codec}
        yield Host(bridge, codec)


MODES = [("json", False), ("msgpack", False), ("msgpack", True), ("json", True)]
MODE_IDS = ["json", "msgpack", "negotiated-msgpack", "negotiated-json"]


@pytest.mark.parametrize(("codec", "negotiate"), MODES, ids=MODE_IDS)
def test_generic_commands(codec: str, negotiate: bool) -> None:
    with host(codec, negotiate=negotiate) as h:
        ping = h.ok("ping", worker_id="w1", initialization=True)
        assert ping["bridge_type"] == "enhanced" and ping["worker_id"] == "w1"
        assert "pandas" in ping["frameworks_available"] and ping["stored_objects"] == 0
        args = {"a": [1, {"b": None}], "s": "é", "f": 1.5}
        assert h.ok("echo", **args)["echoed"] == args
        if codec == "msgpack":
            assert h.ok("echo", blob=b"\x00\xff")["echoed"] == {"blob": b"\x00\xff"}
        assert h.ok("compute", operation="divide", a=7, b=2)["result"] == 3.5
        assert h.fail("compute", "bad_request", operation="divide", a=1, b=0)
        info = h.ok("info")
        assert set(info["bridge_info"]["supported_commands"]) == ENHANCED | GENERIC
        assert "math" in info["enhanced_info"]["allowed_modules"]
        assert h.fail("nope", "unknown_command")
        h.ok("store", id="k", value=[1, 2])
        assert h.ok("ping")["stored_objects"] == 1


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_dspy_style_pipeline_flow(codec: str) -> None:
    """Build objects, keep them by name, pass them on by reference, read the result."""
    steps = [
        {"target": "fractions.Fraction", "args": [3, 4], "store_as": "half"},
        {"target": "stored.half.limit_denominator", "args": [2], "store_as": "approx"},
        {
            "target": "statistics.mean",
            "args": [["stored.half", "stored.approx"]],
            "store_as": "avg",
        },
        {"target": "json.dumps", "kwargs": {"obj": {"answer": "stored.avg.numerator"}}},
    ]
    with host(codec) as h:
        out = h.ok("pipeline", steps=steps, session_id="user-1")
        assert out["steps_completed"] == 4 and len(out["pipeline_results"]) == 4
        first, second, third, fourth = out["pipeline_results"]
        assert first["stored_as"] == "half" and first["target"] == "fractions.Fraction"
        assert (
            first["result"]["type"] == "Fraction"
            and first["result"]["string_repr"] == "Fraction(3, 4)"
        )
        assert second["result"]["string_repr"] == "Fraction(1, 1)"
        assert third["result"]["string_repr"] == "Fraction(7, 8)"
        assert fourth["result"] == {"type": "str", "value": '{"answer": 7}'}
        listed = h.ok("list_stored", session_id="user-1")
        assert listed["stored_objects"] == ["half", "approx", "avg"] and listed["count"] == 3
        assert h.ok("list_stored")["count"] == 0  # the default session is another namespace
        retrieved = h.ok("retrieve", id="avg", session_id="user-1")["object"]
        assert retrieved["string_repr"] == "Fraction(7, 8)"
        # A failing step stops the pipeline, names its index; later steps do not run.
        message = h.fail(
            "pipeline",
            "not_found",
            session_id="user-1",
            steps=[
                {"target": "math.sqrt", "args": [4], "store_as": "ok0"},
                {"target": "stored.missing.upper"},
                {"target": "math.sqrt", "args": [9], "store_as": "never"},
            ],
        )
        assert message.startswith("pipeline step 1 ")
        ids = h.ok("list_stored", session_id="user-1")["stored_objects"]
        assert "ok0" in ids and "never" not in ids
        assert h.ok("clear_session", session_id="user-1")["cleared"] == 4
        assert h.fail("retrieve", "not_found", id="avg", session_id="user-1")


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_pandas_dataframe_over_the_wire(codec: str) -> None:
    pytest.importorskip("pandas", reason="pandas not installed")
    names = ["a", "b", "c", "d", "e", "f", "g"]
    scores = [3, 1, 4, 1, 5, 9, 2]
    data = {"name": names, "score": scores}
    with host(codec) as h:
        df = h.ok("call", target="pandas.DataFrame", kwargs={"data": data}, store_as="df")
        assert df["stored_as"] == "df"
        shape = df["result"]
        assert shape["type"] == "DataFrame" and shape["shape"] == [7, 2]
        assert shape["columns"] == ["name", "score"] and shape["dtypes"]["score"] == "int64"
        assert shape["head"] == [
            {"name": n, "score": s} for n, s in zip(names[:5], scores[:5], strict=True)
        ]
        assert isinstance(shape["string_repr"], str)
        top = h.ok("call", target="stored.df.nlargest", args=[2, "score"])["result"]
        assert top["head"] == [{"name": "f", "score": 9}, {"name": "e", "score": 5}]
        series = h.ok("retrieve", id="df")["object"]
        assert series == shape
        described = h.ok("call", target="stored.df.describe")["result"]
        assert described["type"] == "DataFrame" and described["columns"] == ["score"]


def test_probes_over_the_wire(tmp_path: Path) -> None:
    pytest.importorskip("pandas", reason="pandas not installed")
    marker = tmp_path / "marker"
    with host("msgpack") as h:
        h.ok("store", id="X", value="hello")
        h.ok("store", id="L", value=[1, 2])
        h.ok("call", target="pandas.DataFrame", kwargs={"data": {"a": [1, 2]}}, store_as="df")
        h.ok("call", target="numpy.ones", args=[4], store_as="arr")
        h.ok("call", target="stored.df.iterrows", store_as="gen")
        h.ok("call", target="decimal.Decimal", args=["1.5"], store_as="dec")
        for probe in PROBES:
            message = h.fail(probe.command, "forbidden", **_fill(probe.args, str(marker)))
            assert f"rule {probe.rule!r}" in message, (probe.name, message)
            assert not marker.exists(), probe.name
        assert "leak" not in h.ok("list_stored")["stored_objects"]
        assert h.ok("call", target="math.sqrt", args=[4])["result"]["value"] == 2.0


def test_unserialisable_results_are_errors_not_crashes() -> None:
    with host("json") as h:
        message = h.fail("call", "serialization_error", target="math.inf")
        assert "json" in message.lower()
        h.ok("store", id="s", value=1)
        assert h.ok("retrieve", id="s")["object"] == {"type": "int", "value": 1}
    with host("msgpack") as h:
        assert h.ok("call", target="math.inf")["result"] == {"type": "float", "value": float("inf")}


def test_deleted_memory_goes_back_to_the_os() -> None:
    pytest.importorskip("numpy", reason="numpy not installed")
    big = 100 * 1024 * 1024  # bytes of float64 ones; far above the noise of the interpreter
    with host("msgpack") as h:
        h.ok("call", target="numpy.ones", args=[big // 8], store_as="big")
        held = h.rss()
        h.ok("delete_stored", id="big")
        deadline = time.monotonic() + 5
        while h.rss() > held - big * 0.8 and time.monotonic() < deadline:
            time.sleep(0.05)
        released = held - h.rss()
        assert released > big * 0.8, f"only {released} of {big} bytes released"
        h.ok("call", target="numpy.ones", args=[big // 8], store_as="again", session_id="s")
        h.ok("clear_session", session_id="s")
        assert h.rss() < held - big * 0.8


def test_command_line_options() -> None:
    with host(
        "json", "--max-stored", "2", "--allow-module", "string", "--quiet", "--mode", "pool-worker"
    ) as h:
        h.ok("store", id="a", value=1)
        h.ok("store", id="b", value=2)
        assert "2" in h.fail("store", "store_full", id="c", value=3)
        assert (
            h.ok("call", target="string.capwords", args=["hi there"])["result"]["value"]
            == "Hi There"
        )
        assert "module_not_allowed" in h.fail("call", "forbidden", target="os.getcwd")
    with host("json", "--deny", "math.sqrt", "--max-items", "2") as h:
        assert "denylisted" in h.fail("call", "forbidden", target="math.sqrt", args=[4])
        assert h.ok("call", target="json.loads", args=["[1,2,3]"])["result"]["value"] == [
            {"type": "int", "value": 1},
            {"type": "int", "value": 2},
        ]
    with host("json") as h:
        assert "module_not_allowed" in h.fail(
            "call", "forbidden", target="string.capwords", args=["x"]
        )


def test_show_policy_and_console_script() -> None:
    shown = subprocess.run(
        [*BRIDGE, "--show-policy"], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    assert "pandas.read_*" in shown.stdout and "  math" in shown.stdout
    script = Path(sys.executable).parent / "snakepit-enhanced-bridge"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    helped = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    assert "--allow-module" in helped.stdout and "--max-stored" in helped.stdout
    bad = subprocess.run(
        [*BRIDGE, "--allow-module", "not a module"],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert bad.returncode == 2 and "not a module name" in bad.stderr
