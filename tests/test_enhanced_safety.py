"""§7.2 safety of the enhanced bridge: a table of escape attempts, every route.

Each probe goes through one route (a ``call`` target, a ``stored.`` target, a
``pipeline`` step, ``inspect``, or a ``"stored.…"`` reference inside args) and
must answer ``forbidden`` naming the expected rule, *and* have no effect: the
marker file the probe tries to create does not exist afterwards, no object was
stored, and modules off the allowlist were not imported.  A second table shows
the ordinary calls still work, so the rules cannot pass by refusing everything.
The same probes run over the wire in ``test_enhanced_wire.py`` and in the
conformance cases.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from snakepit_bridge import CommandError
from snakepit_bridge.enhanced import EnhancedCommandHandler, SafetyPolicy, SpawnGuard

pytest.importorskip("pandas", reason="pandas not installed")
pytest.importorskip("numpy", reason="numpy not installed")


@dataclass(frozen=True)
class Probe:
    name: str
    command: str
    args: dict[str, Any]
    rule: str  # the rule the refusal must name


def _call(target: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"target": target, "args": list(args), "kwargs": kwargs, "store_as": "leak"}


M = "{marker}"  # replaced by a path in tmp_path; the probe must not create it

PROBES = [
    # -- module targets ---------------------------------------------------------
    Probe("os.system", "call", _call("os.system", f"touch {M}"), "module_not_allowed"),
    Probe("subprocess.run", "call", _call("subprocess.run", ["touch", M]), "module_not_allowed"),
    Probe(
        "builtins.eval", "call", _call("builtins.eval", f"open('{M}','w')"), "module_not_allowed"
    ),
    Probe(
        "builtins.exec", "call", _call("builtins.exec", f"open('{M}','w')"), "module_not_allowed"
    ),
    Probe("builtins.open", "call", _call("builtins.open", M, "w"), "module_not_allowed"),
    Probe(
        "builtins.getattr", "call", _call("builtins.getattr", "x", "upper"), "module_not_allowed"
    ),
    Probe(
        "importlib.import_module",
        "call",
        _call("importlib.import_module", "os"),
        "module_not_allowed",
    ),
    Probe("math.__loader__", "call", _call("math.__loader__"), "private_name"),
    Probe("math.__spec__ walk", "call", _call("math.__spec__.loader"), "private_name"),
    Probe("statistics.sys.exit", "call", _call("statistics.sys.exit", 3), "module_not_allowed"),
    Probe(
        "json.decoder.re.compile",
        "call",
        _call("json.decoder.re.compile", "x"),
        "module_not_allowed",
    ),
    Probe(
        "fractions.operator.attrgetter",
        "call",
        _call("fractions.operator.attrgetter", "__class__"),
        "module_not_allowed",
    ),
    Probe("json.codecs.open", "call", _call("json.codecs.open", M, "w"), "module_not_allowed"),
    Probe(
        "statistics.groupby (itertools)",
        "call",
        _call("statistics.groupby", [1]),
        "defined_outside_allowlist",
    ),
    Probe("this (prints on import)", "call", _call("this.s"), "module_not_allowed"),
    Probe("antigravity (opens a browser)", "call", _call("antigravity.fly"), "module_not_allowed"),
    Probe("pandas.eval", "call", _call("pandas.eval", "1 + 1"), "denylisted"),
    Probe("pandas.read_pickle", "call", _call("pandas.read_pickle", M), "denylisted"),
    Probe("pandas.read_csv", "call", _call("pandas.read_csv", "/etc/passwd"), "denylisted"),
    Probe("pandas.io route", "call", _call("pandas.io.pickle.read_pickle", M), "denylisted"),
    Probe(
        "pandas.core.computation",
        "call",
        _call("pandas.core.computation.eval.eval", "1 + 1"),
        "denylisted",
    ),
    Probe(
        "pandas.DataFrame.to_csv unbound",
        "call",
        _call("pandas.DataFrame.to_csv", "stored.df", M),
        "denylisted",
    ),
    Probe(
        "pandas.set_option backend",
        "call",
        _call("pandas.set_option", "plotting.backend", "this"),
        "denylisted",
    ),
    Probe("numpy.load", "call", _call("numpy.load", M, mmap_mode="r"), "denylisted"),
    Probe("numpy.save", "call", _call("numpy.save", M, [1, 2]), "denylisted"),
    Probe("numpy.savetxt", "call", _call("numpy.savetxt", M, [1, 2]), "denylisted"),
    Probe("numpy.memmap", "call", _call("numpy.memmap", M, mode="w+", shape=4), "denylisted"),
    Probe(
        "numpy.ctypeslib",
        "call",
        _call("numpy.ctypeslib.load_library", "libc.so.6", "/lib"),
        "denylisted",
    ),
    Probe(
        "numpy.lib.stride_tricks",
        "call",
        _call("numpy.lib.stride_tricks.as_strided", "stored.arr"),
        "denylisted",
    ),
    Probe("numpy.core alias", "call", _call("numpy.core.multiarray.fromfile", M), "denylisted"),
    Probe("numpy.f2py", "call", _call("numpy.f2py.compile", "x"), "denylisted"),
    Probe(
        "numpy.ndarray.tofile unbound",
        "call",
        _call("numpy.ndarray.tofile", "stored.arr", M),
        "denylisted",
    ),
    Probe("decimal.getcontext", "call", _call("decimal.getcontext"), "denylisted"),
    Probe("decimal.setcontext", "call", _call("decimal.setcontext", "stored.X"), "denylisted"),
    Probe(
        "decimal context trick", "call", _call("decimal.DefaultContext.clear_traps"), "denylisted"
    ),
    Probe(
        "numpy.info imports by name",
        "call",
        _call("numpy.info", "x", toplevel="antigravity"),
        "denylisted",
    ),
    Probe(
        "numpy.lib.add_newdoc",
        "call",
        _call("numpy.lib.add_newdoc", "antigravity", "x", "doc"),
        "denylisted",
    ),
    Probe(
        "pandas.core.apply route",
        "call",
        _call("pandas.core.apply.frame_apply", "stored.df", "to_pickle"),
        "denylisted",
    ),
    Probe("allow_pickle flag", "call", _call("json.dumps", [1], allow_pickle=True), "unsafe_flag"),
    Probe(
        "weights_only=False flag",
        "call",
        _call("json.dumps", {"weights_only": False}),
        "unsafe_flag",
    ),
    Probe("json.tool reads the bridge's stdin", "call", _call("json.tool.main"), "denylisted"),
    Probe(
        "pandas arraylike getattr route",
        "call",
        _call("pandas.core.arraylike.default_array_ufunc", "stored.df", "stored.df", "to_csv", M),
        "denylisted",
    ),
    Probe(
        "pandas optional import route",
        "call",
        _call("pandas.core.frame.import_optional_dependency", "antigravity"),
        "denylisted",
    ),
    Probe(
        "pandas.show_versions writes",
        "call",
        _call("pandas.show_versions", as_json=M),
        "denylisted",
    ),
    Probe(
        "groupby filter by name",
        "pipeline",
        {
            "steps": [
                {"target": "stored.df.groupby", "args": ["a"], "store_as": "g"},
                _call("stored.g.filter", "to_csv", M),
            ]
        },
        "dispatch_name",
    ),
    # -- stored-object targets --------------------------------------------------
    Probe("stored.X.__class__", "call", _call("stored.X.__class__"), "private_name"),
    Probe("stored.missing.__class__", "call", _call("stored.nothing.__class__"), "private_name"),
    Probe(
        "subclasses walk",
        "call",
        _call("stored.X.__class__.__base__.__subclasses__"),
        "private_name",
    ),
    Probe("str.format walk", "call", _call("stored.X.format", "x"), "data_method"),
    Probe("str.format_map", "call", _call("stored.X.format_map", {}), "data_method"),
    Probe("DataFrame.query", "call", _call("stored.df.query", "a > 0"), "denylisted"),
    Probe("DataFrame.eval", "call", _call("stored.df.eval", "a + 1"), "denylisted"),
    Probe("DataFrame.to_csv", "call", _call("stored.df.to_csv", M), "denylisted"),
    Probe("DataFrame.to_pickle", "call", _call("stored.df.to_pickle", M), "denylisted"),
    Probe("DataFrame.to_json", "call", _call("stored.df.to_json", M), "denylisted"),
    Probe("DataFrame.to_clipboard", "call", _call("stored.df.to_clipboard"), "denylisted"),
    Probe("DataFrame.plot", "call", _call("stored.df.plot"), "denylisted"),
    Probe("DataFrame.style", "call", _call("stored.df.style"), "denylisted"),
    Probe("ndarray.tofile", "call", _call("stored.arr.tofile", M), "denylisted"),
    Probe("ndarray.dump", "call", _call("stored.arr.dump", M), "denylisted"),
    Probe("ndarray.ctypes", "call", _call("stored.arr.ctypes"), "denylisted"),
    Probe(
        "ndarray.resize refcheck",
        "call",
        _call("stored.arr.resize", [64], refcheck=False),
        "denylisted",
    ),
    Probe("generator frame walk", "call", _call("stored.gen.gi_frame.f_globals"), "unsafe_type"),
    Probe("apply('query')", "call", _call("stored.df.apply", "query"), "dispatch_name"),
    Probe("agg('to_csv')", "call", _call("stored.df.agg", "to_csv", M), "dispatch_name"),
    Probe(
        "transform('__class__')", "call", _call("stored.df.transform", "__class__"), "dispatch_name"
    ),
    # -- inspect ----------------------------------------------------------------
    Probe("inspect os.system", "inspect", {"target": "os.system"}, "module_not_allowed"),
    Probe(
        "inspect stored.X.__class__", "inspect", {"target": "stored.X.__class__"}, "private_name"
    ),
    Probe("inspect statistics.sys", "inspect", {"target": "statistics.sys"}, "module_not_allowed"),
    Probe("inspect pandas.eval", "inspect", {"target": "pandas.eval"}, "denylisted"),
    Probe("inspect generator", "inspect", {"target": "stored.gen"}, "unsafe_type"),
    Probe("inspect math.__loader__", "inspect", {"target": "math.__loader__"}, "private_name"),
    # -- pipeline steps ---------------------------------------------------------
    Probe(
        "pipeline os.system after a good step",
        "pipeline",
        {"steps": [{"target": "math.sqrt", "args": [4]}, _call("os.system", f"touch {M}")]},
        "module_not_allowed",
    ),
    Probe(
        "pipeline stored walk",
        "pipeline",
        {
            "steps": [
                {"target": "pandas.DataFrame", "kwargs": {"data": {"a": [1]}}, "store_as": "p"},
                _call("stored.p.to_csv", M),
            ]
        },
        "denylisted",
    ),
    Probe(
        "pipeline dunder",
        "pipeline",
        {"steps": [_call("stored.X.__class__")]},
        "private_name",
    ),
    Probe(
        "pipeline inspect-like walk",
        "pipeline",
        {"steps": [_call("json.decoder.re.compile", "x")]},
        "module_not_allowed",
    ),
    # -- "stored." references inside args ---------------------------------------
    Probe("ref dunder", "call", _call("json.dumps", "stored.X.__class__"), "private_name"),
    Probe("ref generator (nested)", "call", _call("json.dumps", [["stored.gen"]]), "unsafe_type"),
    Probe("ref generator into list", "call", _call("stored.L.append", "stored.gen"), "unsafe_type"),
    Probe(
        "ref in dict value", "call", _call("statistics.mean", {"data": "stored.gen"}), "unsafe_type"
    ),
    Probe(
        "ref str.format hook",
        "call",
        _call("json.loads", "{}", object_hook="stored.X.format"),
        "data_method",
    ),
    Probe(
        "ref writer hook",
        "call",
        _call("json.loads", "{}", object_hook="stored.df.to_pickle"),
        "denylisted",
    ),
    Probe(
        "ref writer to pipe", "call", _call("stored.df.pipe", "stored.df.to_csv", M), "denylisted"
    ),
    Probe("ref raw pointer", "call", _call("json.dumps", "stored.arr.ctypes"), "denylisted"),
    # -- argument rules ---------------------------------------------------------
    Probe(
        "format walk in args",
        "call",
        _call("math.fsum", [{"a": "{0.__init__.__globals__}"}]),
        "format_walk",
    ),
    Probe(
        "trust_remote_code",
        "call",
        _call("json.dumps", {"model_kwargs": {"trust_remote_code": True}}),
        "unsafe_flag",
    ),
]

# Modules whose import alone has effects (or that a probe names): never imported.
NEVER_IMPORTED = ("this", "antigravity", "numpy.f2py", "numpy.ctypeslib")


def _fill(value: Any, marker: str) -> Any:
    if isinstance(value, str):
        return value.replace(M, marker)
    if isinstance(value, list):
        return [_fill(v, marker) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, marker) for k, v in value.items()}
    return value


@pytest.fixture
def handler() -> Iterator[EnhancedCommandHandler]:
    h = EnhancedCommandHandler()
    h.process_command("store", {"id": "X", "value": "hello"})
    h.process_command("store", {"id": "L", "value": [1, 2]})
    h.process_command(
        "call",
        {"target": "pandas.DataFrame", "kwargs": {"data": {"a": [1, 2]}}, "store_as": "df"},
    )
    h.process_command("call", {"target": "numpy.ones", "args": [4], "store_as": "arr"})
    h.process_command("call", {"target": "stored.df.iterrows", "store_as": "gen"})
    # A decimal.Context object inside a stored value: reachable data, but its
    # class's methods are fine; only the shared contexts are denied.
    h.process_command("call", {"target": "decimal.Decimal", "args": ["1.5"], "store_as": "dec"})
    yield h


def test_probe_table_is_large_enough() -> None:
    routes = {p.command for p in PROBES}
    assert len(PROBES) >= 40
    assert routes == {"call", "inspect", "pipeline"}
    assert any("stored." in str(p.args.get("args")) for p in PROBES)  # references in args
    assert any(str(p.args.get("target", "")).startswith("stored.") for p in PROBES)


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe_is_refused_without_effect(
    probe: Probe, handler: EnhancedCommandHandler, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    before_modules = [m for m in NEVER_IMPORTED if m in sys.modules]
    with pytest.raises(CommandError) as caught:
        handler.process_command(probe.command, _fill(probe.args, str(marker)))
    assert caught.value.error_type == "forbidden", str(caught.value)
    assert f"rule {probe.rule!r}" in str(caught.value)
    assert not marker.exists(), "the probe had an effect"
    assert "leak" not in handler.store.ids(""), "a refused call stored its result"
    assert [m for m in NEVER_IMPORTED if m in sys.modules] == before_modules
    # The bridge keeps serving afterwards.
    assert handler.process_command("call", {"target": "math.sqrt", "args": [9]})["result"] == {
        "type": "float",
        "value": 3.0,
    }


def test_refused_pipeline_step_names_its_index(handler: EnhancedCommandHandler) -> None:
    with pytest.raises(CommandError) as caught:
        handler.process_command(
            "pipeline",
            {"steps": [_call("math.sqrt", 4), _call("math.sqrt", 9), _call("os.system", "true")]},
        )
    assert caught.value.error_type == "forbidden"
    assert str(caught.value).startswith("pipeline step 2 ")


ALLOWED = [
    ("math.sqrt", [16], {}, {"type": "float", "value": 4.0}),
    ("statistics.mean", [[1, 2, 3]], {}, {"type": "int", "value": 2}),
    ("json.dumps", [{"a": 1}], {"sort_keys": True}, {"type": "str", "value": '{"a": 1}'}),
    (
        "json.loads",
        ["[1]"],
        {},
        {"type": "list", "value": [{"type": "int", "value": 1}], "length": 1},
    ),
    ("math.pi", [], {}, {"type": "float", "value": 3.141592653589793}),
    ("stored.X.upper", [], {}, {"type": "str", "value": "HELLO"}),
    ("stored.X.replace", ["l", "L"], {}, {"type": "str", "value": "heLLo"}),
    ("stored.L.count", [2], {}, {"type": "int", "value": 1}),
    ("numpy.sum", ["stored.arr"], {}, {"type": "float64", "value": 4.0}),
    ("stored.arr.sum", [], {}, {"type": "float64", "value": 4.0}),
    ("stored.df.agg", ["sum"], {}, None),
    ("pandas.DataFrame.to_dict", ["stored.df"], {"orient": "list"}, None),
    ("stored.dec.sqrt", [], {}, None),
    ("fractions.Fraction", [1, 3], {}, None),
    ("fractions.math.gcd", [12, 18], {}, {"type": "int", "value": 6}),  # math is allowed
]


@pytest.mark.parametrize(
    ("target", "args", "kwargs", "expected"), ALLOWED, ids=[a[0] for a in ALLOWED]
)
def test_ordinary_calls_still_work(
    handler: EnhancedCommandHandler,
    target: str,
    args: list[Any],
    kwargs: dict[str, Any],
    expected: dict[str, Any] | None,
) -> None:
    out = handler.process_command("call", {"target": target, "args": args, "kwargs": kwargs})
    assert out["status"] == "ok" and out["target"] == target
    if expected is not None:
        assert out["result"] == expected


def test_inspect_allowed_target(handler: EnhancedCommandHandler) -> None:
    out = handler.process_command("inspect", {"target": "math.sqrt"})["inspection"]
    assert out["module"] == "math" and out["callable"] is True and out["type"]
    assert "square root" in out["docstring"]
    df = handler.process_command("inspect", {"target": "stored.df"})["inspection"]
    assert df["type"] == "DataFrame" and "head" in df["attributes"]
    assert not any(name.startswith("_") for name in df["attributes"])


def test_allow_module_widens_and_denylist_is_changeable() -> None:
    narrow = EnhancedCommandHandler(SafetyPolicy(allowed_modules=("math",)))
    with pytest.raises(CommandError, match="module_not_allowed"):
        narrow.process_command("call", {"target": "statistics.mean", "args": [[1]]})
    wide = EnhancedCommandHandler(SafetyPolicy(allowed_modules=("math", "statistics", "string")))
    assert wide.process_command("call", {"target": "string.capwords", "args": ["a b"]})[
        "result"
    ] == {"type": "str", "value": "A B"}
    # A user can deny an allowed function...
    strict = EnhancedCommandHandler(
        SafetyPolicy(allowed_modules=("math",), denylist=("math.sqrt",))
    )
    with pytest.raises(CommandError, match="denylisted"):
        strict.process_command("call", {"target": "math.sqrt", "args": [4]})
    # ...and lift a default entry (decimal.getcontext is denied by default).
    lifted = EnhancedCommandHandler(SafetyPolicy(allowed_modules=("decimal",), denylist=()))
    assert lifted.process_command("call", {"target": "decimal.getcontext"})["status"] == "ok"


def test_allowlisting_a_module_does_not_open_its_imports() -> None:
    # Even with os-importing modules allowed, reaching os through them is refused.
    policy = SafetyPolicy(allowed_modules=("math", "shutil"))
    handler = EnhancedCommandHandler(policy)
    with pytest.raises(CommandError, match="module_not_allowed"):
        handler.process_command("call", {"target": "shutil.os.system", "args": ["true"]})


def test_a_call_cannot_exit_the_bridge() -> None:
    # With sys allowed on purpose, sys.exit is reachable; it still cannot end the bridge.
    handler = EnhancedCommandHandler(SafetyPolicy(allowed_modules=("sys",), denylist=()))
    with pytest.raises(CommandError, match="no_exit") as caught:
        handler.process_command("call", {"target": "sys.exit", "args": [3]})
    assert caught.value.error_type == "forbidden"
    assert handler.process_command("ping", {})["status"] == "ok"


def test_spawn_guard_blocks_process_creation(tmp_path: Path) -> None:
    marker = tmp_path / "spawned"
    with SpawnGuard.active(), pytest.raises(CommandError, match="spawn_guard"):
        os.system(f"touch {marker}")
    assert not marker.exists()
    # Outside a command the guard is idle.
    assert os.system("true") == 0


def test_spawn_guard_blocks_imports_that_act() -> None:
    import importlib

    if "this" in sys.modules:
        pytest.skip("'this' was imported before the test")
    with SpawnGuard.active(), pytest.raises(CommandError, match="spawn_guard"):
        importlib.import_module("this")
    assert "this" not in sys.modules


def test_spawn_guard_blocks_pickled_code() -> None:
    import pickle

    payload = b"cos\nsystem\n(S'true'\ntR."  # the classic pickle that runs os.system
    with SpawnGuard.active(), pytest.raises(CommandError, match="spawn_guard"):
        pickle.loads(payload)


def test_bad_targets_are_bad_requests(handler: EnhancedCommandHandler) -> None:
    for target in ("", "math..sqrt", "math.sqrt()", "math.sqrt; import os", 42, None, "x" * 2000):
        with pytest.raises(CommandError) as caught:
            handler.process_command("call", {"target": target})
        assert caught.value.error_type == "bad_request", target
