"""The second line of the enhanced bridge's safety (PROTOCOL §7.2): a PEP 578 audit hook.

Whatever gap the resolver's rules (:mod:`~snakepit_bridge.enhanced.safety`)
might leave, while a command runs no program can be started, no process
signalled, no code-running global unpickled, and no module whose import alone
acts imported for the first time.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from .rules import forbidden

__all__ = ["SpawnGuard"]


class SpawnGuard:
    """A PEP 578 audit hook that refuses process creation while a command runs.

    Installed once per process (audit hooks cannot be removed); it acts only
    inside :meth:`active`.  Blocked: starting programs (``os.system``,
    ``subprocess.Popen``, ``os.exec*``, ``os.spawn*``, ``os.posix_spawn``,
    ``os.fork``), signalling processes, unpickling globals that run code or
    reach files (``os.*``, ``io.open``, ``builtins.eval``, ``operator.*``, ...),
    and the first import of modules whose import alone acts (``antigravity``
    opens a browser, ``this`` prints; DSPy imports a type name from a signature
    string).  Not blocked: file and socket access, which DSPy's cache and LM
    calls need, and imports in general, which libraries do lazily.
    """

    EVENTS: Final = frozenset(
        {
            "os.system",
            "os.exec",
            "os.spawn",
            "os.posix_spawn",
            "os.fork",
            "os.forkpty",
            "subprocess.Popen",
            "os.kill",
            "os.killpg",
            "pty.spawn",
        }
    )
    # Modules whose globals a pickle must never name; builtins that run code.
    PICKLE_MODULES: Final = frozenset(
        {
            "os",
            "posix",
            "nt",
            "subprocess",
            "sys",
            "importlib",
            "runpy",
            "code",
            "codeop",
            "ctypes",
            "shutil",
            "socket",
            "pty",
            "webbrowser",
            "pickle",
            "_pickle",
            "marshal",
            "types",
            "io",
            "_io",
            "codecs",
            "pathlib",
            "operator",
            "_operator",
            "functools",
            "_functools",
            "tempfile",
            "glob",
            "multiprocessing",
            "threading",
            "signal",
            "inspect",
            "pydoc",
        }
    )
    PICKLE_BUILTINS: Final = frozenset(
        {
            "eval",
            "exec",
            "compile",
            "__import__",
            "open",
            "breakpoint",
            "input",
            "globals",
            "locals",
            "vars",
            "getattr",
            "setattr",
            "delattr",
            "__build_class__",
        }
    )
    # Modules whose first import has an effect of its own.
    IMPORT_EFFECTS: Final = frozenset(
        {"antigravity", "this", "webbrowser", "turtle", "tkinter", "idlelib", "pty", "pdb"}
    )

    _installed = False
    _lock = threading.Lock()
    _depth = 0

    @classmethod
    def _install(cls) -> None:
        with cls._lock:
            if not cls._installed:
                sys.addaudithook(cls._hook)
                cls._installed = True

    @classmethod
    def _hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if cls._depth <= 0:
            return
        if event in cls.EVENTS:
            raise forbidden("spawn_guard", f"the call tried {event}, which the bridge never allows")
        if event == "pickle.find_class" and len(args) == 2:
            module, name = str(args[0]), str(args[1])
            top = module.split(".", maxsplit=1)[0]
            if top in cls.PICKLE_MODULES or (module == "builtins" and name in cls.PICKLE_BUILTINS):
                raise forbidden("spawn_guard", f"unpickling {module}.{name} is never allowed")
        if event == "import" and args:
            name = str(args[0])
            if name.split(".", maxsplit=1)[0] in cls.IMPORT_EFFECTS and name not in sys.modules:
                raise forbidden("spawn_guard", f"importing {name} is never allowed")
        if event == "open" and args and isinstance(args[0], str):
            # importlib.import_module raises no "import" event, but every import
            # reads the module's .py or .pyc through io.open_code ("open").
            filename = args[0].rpartition("/")[2]
            stem = filename.split(".", maxsplit=1)[0]
            if stem in cls.IMPORT_EFFECTS and filename.endswith((".py", ".pyc")):
                raise forbidden("spawn_guard", f"importing {stem} is never allowed")

    @classmethod
    @contextmanager
    def active(cls) -> Iterator[None]:
        """Refuse the guarded events (in every thread) until the block ends."""
        cls._install()
        cls._depth += 1
        try:
            yield
        finally:
            cls._depth -= 1
