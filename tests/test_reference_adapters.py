"""The adapter API (snakepit_bridge) as an adapter author meets it.

The documented adapter runs unchanged both as a script and through
``--adapter``; misbehaving commands (unencodable results, exceptions, prints)
get the §4.5/§4.6/§2.7 treatment over a real bridge process; bad ``--adapter``
values are clear start-up errors; and the v1 bridge runs with msgpack
unimportable.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from snakepit_bridge import (
    BadRequestError,
    BaseCommandHandler,
    CommandError,
    ForbiddenError,
    GenericCommandHandler,
    NotFoundError,
    SerializationError,
    StoreFullError,
    UnknownCommandError,
)
from snakepit_bridge.bridge_cli import (
    AdapterLoadError,
    load_adapter,
    make_parser,
    split_adapter_spec,
)

from snakepit_harness.transports import StdioBridge

from .adapters.support import (
    ADAPTERS_DIR,
    BIN_DIR,
    PY,
    TIMEOUT,
    V1,
    V2,
    Session,
    adapter_env,
    negotiate,
    wait_for_stderr,
)

# Every test here runs against bridges with and without the C fast loop.
pytestmark = pytest.mark.usefixtures("both_loops")

MY_COMMAND_ARGS = {"text": "hello", "n": [1, 2, 3]}

# -- the documented adapter ------------------------------------------------------------

ADAPTER_LAUNCHES = {
    "script": ((PY, str(ADAPTERS_DIR / "my_script.py")), None),
    "--adapter on PYTHONPATH": ((*V2, "--adapter", "my_module:MyCustomHandler"), None),
    # The form Snakepit's own documents use: the last dot splits module from class.
    "--adapter dotted on PYTHONPATH": ((*V2, "--adapter", "my_module.MyCustomHandler"), None),
    "--adapter file path": (
        (*V2, "--adapter", f"{ADAPTERS_DIR / 'my_module.py'}:MyCustomHandler"),
        None,
    ),
    # A console script's sys.path lacks the current directory; the bridge adds it.
    "console script in adapter dir": (
        (str(BIN_DIR / "snakepit-generic-bridge-v2"), "--adapter", "my_module:MyCustomHandler"),
        ADAPTERS_DIR,
    ),
    "console script in adapter dir, dotted": (
        (str(BIN_DIR / "snakepit-generic-bridge-v2"), "--adapter", "my_module.MyCustomHandler"),
        ADAPTERS_DIR,
    ),
}


@pytest.mark.parametrize("launch", list(ADAPTER_LAUNCHES))
@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_documented_adapter_runs_unchanged(launch: str, codec: str) -> None:
    argv, cwd = ADAPTER_LAUNCHES[launch]
    if not Path(argv[0]).exists():
        pytest.skip(f"{argv[0]} is not installed")
    env = adapter_env() if "PYTHONPATH" in launch else None
    with StdioBridge(argv, env=env, cwd=cwd) as bridge:
        assert negotiate(bridge, ["json", "msgpack"], codec) == codec
        s = Session(bridge, codec)
        assert s.ok(1, "ping", worker_id="w", initialization=True)["status"] == "ok"
        assert s.ok(2, "my_command", **MY_COMMAND_ARGS) == {
            "result": "processed",
            "input": MY_COMMAND_ARGS,
        }
        info = s.ok(3, "info")
        assert set(info["bridge_info"]["supported_commands"]) == {"info", "my_command", "ping"}
        unknown = s.call(4, "echo")
        assert unknown["success"] is False and unknown["error_type"] == "unknown_command"


BAD_ADAPTER_SPECS = [
    ("no-colon", "my_module"),
    ("dotted missing module", "no_such_module_xyz.Handler"),
    ("dotted missing class", "my_module.NoSuchHandler"),
    ("dotted not a handler", "json.JSONDecoder"),
    ("file without a class", "/nonexistent/adapter.py"),
    ("empty class", "my_module:"),
    ("missing module", "no_such_module_xyz:Handler"),
    ("missing class", "my_module:NoSuchHandler"),
    ("not a handler", "json:JSONDecoder"),
    ("missing file", "/nonexistent/adapter.py:Handler"),
]


@pytest.mark.parametrize(("name", "spec"), BAD_ADAPTER_SPECS, ids=[n for n, _ in BAD_ADAPTER_SPECS])
def test_bad_adapter_spec_is_a_clear_startup_error(name: str, spec: str) -> None:
    done = subprocess.run(
        [*V2, "--adapter", spec],
        env=adapter_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == b""
    assert b"Traceback" not in done.stderr
    assert spec.split(":", maxsplit=1)[0].encode() in done.stderr or b"MODULE:CLASS" in done.stderr


# -- misbehaving commands over a real bridge -------------------------------------------------

MISBEHAVING = (*V2, "--adapter", "misbehaving:MisbehavingHandler")

# command -> (error_type under JSON, error_type under MessagePack); None = success
MISBEHAVIOURS: dict[str, tuple[str | None, str | None]] = {
    "return_set": ("serialization_error", "serialization_error"),
    "return_object": ("serialization_error", "serialization_error"),
    "return_bytes": ("serialization_error", None),
    "return_nan": ("serialization_error", None),
    "return_inf": ("serialization_error", None),
    "return_bigint": (None, "serialization_error"),
    "raise": ("handler_error", "handler_error"),
    "raise_empty": ("handler_error", "handler_error"),
    "raise_bad_request": ("bad_request", "bad_request"),
    "raise_not_found": ("not_found", "not_found"),
}


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_misbehaving_commands_get_error_responses(codec: str) -> None:
    with StdioBridge((*MISBEHAVING, "--protocol", codec), env=adapter_env()) as bridge:
        s = Session(bridge, codec)
        for i, (command, expected) in enumerate(MISBEHAVIOURS.items()):
            response = s.call(i, command, why="test")
            error_type = expected[0 if codec == "json" else 1]
            if error_type is None:
                assert response["success"] is True, (command, response)
            else:
                assert response["success"] is False, (command, response)
                assert response["error_type"] == error_type, (command, response)
            s.assert_serving()
        failure = s.call(99, "raise", why="because")
        assert "because" in failure["error"]
        assert failure["exception"] == "RuntimeError"
        assert "RuntimeError" in failure["traceback"]


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_print_in_an_adapter_never_reaches_the_frames(codec: str) -> None:
    with StdioBridge((*MISBEHAVING, "--protocol", codec), env=adapter_env()) as bridge:
        s = Session(bridge, codec)
        # print(), sys.stdout.write, os.write(1), C write(1) and a child's stdout.
        assert s.ok(1, "print")["printed"] is True
        s.assert_serving()
        assert bridge.unread_stdout == 0
        tail = wait_for_stderr(bridge, b"a child process writing")
        for line in (
            b"print() from an adapter",
            b"sys.stdout.write from an adapter",
            b"os.write(1) from an adapter",
            b"C write(1) from an adapter",
            b"a child process writing to its stdout",
            b"misbehaving adapter imported",  # at import time, before serving
            b"misbehaving adapter constructed",
        ):
            assert line in tail, line


# -- v1 and the standard library ----------------------------------------------------------------

BLOCK_MSGPACK = "raise ImportError('msgpack is blocked by the test')\n"


@pytest.fixture
def no_msgpack_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import msgpack` fails (PYTHONPATH poisoning)."""
    (tmp_path / "msgpack.py").write_text(BLOCK_MSGPACK)
    env = adapter_env({"PYTHONPATH": str(tmp_path)})
    probe = subprocess.run([PY, "-c", "import msgpack"], env=env, capture_output=True, check=False)
    assert probe.returncode != 0 and b"blocked by the test" in probe.stderr
    return env


@pytest.mark.parametrize("entry", ["module", "console-script"])
def test_v1_runs_without_msgpack(no_msgpack_env: dict[str, str], entry: str) -> None:
    argv: tuple[str, ...] = V1
    if entry == "console-script":
        script = BIN_DIR / "snakepit-generic-bridge"
        if not script.exists():
            pytest.skip("snakepit-generic-bridge is not installed")
        argv = (str(script), "--mode", "pool-worker")
    with StdioBridge(argv, env=no_msgpack_env) as bridge:
        assert negotiate(bridge, ["msgpack", "json"], "msgpack") == "json"
        s = Session(bridge, "json")
        assert s.ok(1, "ping", initialization=True)["status"] == "ok"
        assert s.ok(2, "compute", operation="multiply", a=6, b=7)["result"] == 42


def test_v2_without_msgpack_negotiates_json_and_refuses_explicit_msgpack(
    no_msgpack_env: dict[str, str],
) -> None:
    with StdioBridge(V2, env=no_msgpack_env) as bridge:
        assert negotiate(bridge, ["msgpack", "json"], "msgpack") == "json"
        Session(bridge, "json").assert_serving()
    done = subprocess.run(
        [*V2, "--protocol", "msgpack"],
        env=no_msgpack_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 2 and b"pip install" in done.stderr


def test_v1_imports_only_the_standard_library() -> None:
    # Only what importing (and parsing options for) the bridge adds; site hooks
    # such as the editable install's finder were there before.
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import snakepit_bridge.generic_bridge as v1\n"
        "ours = {'snakepit_bridge', 'snakepit_harness'}\n"
        "bad = sorted(m for m in set(sys.modules) - before if m.split('.')[0] not in "
        "sys.stdlib_module_names | ours)\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run(
        [PY, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


# -- the API in-process ---------------------------------------------------------------------------

ERROR_TYPES = [
    (CommandError, "handler_error"),
    (BadRequestError, "bad_request"),
    (UnknownCommandError, "unknown_command"),
    (ForbiddenError, "forbidden"),
    (NotFoundError, "not_found"),
    (StoreFullError, "store_full"),
    (SerializationError, "serialization_error"),
]


@pytest.mark.parametrize(("cls", "error_type"), ERROR_TYPES)
def test_error_classes_carry_their_error_type(cls: type[CommandError], error_type: str) -> None:
    assert cls.error_type == error_type
    assert issubclass(cls, CommandError)


def test_handler_registers_builtins_and_lets_adapters_override_them() -> None:
    class Adapter(BaseCommandHandler):
        bridge_type = "test"

        def _register_commands(self) -> None:
            self.register_command("double", lambda args: args["x"] * 2)
            self.register_command("ping", lambda args: {"status": "ok", "custom": True})

    handler = Adapter()
    assert handler.get_supported_commands() == ["double", "info", "ping"]
    assert handler.process_command("double", {"x": 21}) == 42
    assert handler.process_command("ping", {}) == {"status": "ok", "custom": True}
    with pytest.raises(UnknownCommandError, match="'nope'"):
        handler.process_command("nope", {})
    assert handler.requests_handled == 3
    with pytest.raises(ValueError):
        handler.register_command("", lambda args: None)


def test_generic_handler_answers_the_generic_commands() -> None:
    handler = GenericCommandHandler()
    assert handler.get_supported_commands() == ["compute", "echo", "info", "ping"]
    ping: dict[str, Any] = handler.process_command("ping", {"worker_id": 7})
    assert ping["status"] == "ok" and ping["worker_id"] == 7 and ping["bridge_type"] == "generic"
    with pytest.raises(BadRequestError, match="division by zero"):
        handler.process_command("compute", {"operation": "divide", "a": 1, "b": 0})


ADAPTER_SPEC_FORMS = {
    "my_module:MyCustomHandler": ("my_module", "MyCustomHandler"),
    "my_module.MyCustomHandler": ("my_module", "MyCustomHandler"),
    "pkg.sub.mod.Handler": ("pkg.sub.mod", "Handler"),
    "pkg.sub.mod:Outer.Inner": ("pkg.sub.mod", "Outer.Inner"),
    "adapters/my_module.py:MyCustomHandler": ("adapters/my_module.py", "MyCustomHandler"),
}


@pytest.mark.parametrize("spec", list(ADAPTER_SPEC_FORMS))
def test_adapter_spec_forms_split_as_documented(spec: str) -> None:
    assert split_adapter_spec(spec) == ADAPTER_SPEC_FORMS[spec]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("just_a_module", "MODULE.CLASS or MODULE:CLASS"),
        ("", "MODULE.CLASS or MODULE:CLASS"),
        (".Handler", "MODULE.CLASS or MODULE:CLASS"),
        ("my_module.", "MODULE.CLASS or MODULE:CLASS"),
        (":Handler", "MODULE.CLASS or MODULE:CLASS"),
        ("adapters/my_module.py", "FILE.py:CLASS"),
        ("my_module.py", "FILE.py:CLASS"),
    ],
)
def test_an_adapter_spec_in_neither_form_says_which_forms_work(spec: str, says: str) -> None:
    with pytest.raises(AdapterLoadError, match=re.escape(says)):
        split_adapter_spec(spec)


def test_both_adapter_forms_load_the_same_class() -> None:
    sys.path.insert(0, str(ADAPTERS_DIR))
    try:
        dotted = load_adapter("my_module.MyCustomHandler")
        colon = load_adapter("my_module:MyCustomHandler")
        nested_package = load_adapter("snakepit_bridge.enhanced.EnhancedCommandHandler")
    finally:
        sys.path.remove(str(ADAPTERS_DIR))
    assert dotted is colon and dotted.__name__ == "MyCustomHandler"
    assert nested_package.__module__ == "snakepit_bridge.enhanced.handler"
    with pytest.raises(AdapterLoadError, match="has no 'NoSuchHandler'"):
        load_adapter("snakepit_bridge.generic.NoSuchHandler")


def test_load_adapter_and_parser() -> None:
    sys.path.insert(0, str(ADAPTERS_DIR))
    try:
        cls = load_adapter("my_module:MyCustomHandler")
    finally:
        sys.path.remove(str(ADAPTERS_DIR))
    assert issubclass(cls, BaseCommandHandler)
    with pytest.raises(AdapterLoadError, match="MODULE:CLASS"):
        load_adapter("just_a_module")
    args = make_parser("x", "y").parse_args(
        ["--protocol", "msgpack", "--quiet", "--mode", "pool-worker", "--max-frame-size", "1024"]
    )
    assert (args.protocol, args.quiet, args.max_frame_size) == ("msgpack", True, 1024)
    with pytest.raises(SystemExit):
        make_parser("v1", "", protocols=("json", "auto"), adapter=False).parse_args(
            ["--protocol", "msgpack"]
        )
