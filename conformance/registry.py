"""The case registry: where every conformance case is declared and found.

Cases come from three places, all loaded by :func:`load_cases`:

1. Python modules in the ``snakepit_harness.conformance.cases`` package; every
   module there is imported, and each declares its cases with the
   :func:`case` decorator.  Adding a module is all it takes (the enhanced and
   gRPC cases plug in this way).
2. Modules named by the entry-point group ``snakepit_harness.conformance_cases``
   (third-party case packs; importing the module registers its cases).
3. Golden-frame files: every ``*.json`` under ``fixtures/golden`` (and any
   extra directory given to :func:`load_cases`), see fixtures/golden/FORMAT.md.

Ids are unique: registering an id twice is an error, so a typo cannot
silently shadow a case.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import re
from collections.abc import Callable, Iterable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Final

from snakepit_harness.errors import HarnessError
from snakepit_harness.protocol import STDIO_PROFILES

from .model import BridgeUse, Case, CaseFn, Level

__all__ = [
    "ALL_STDIO",
    "CASE_PACKAGE",
    "ENTRY_POINT_GROUP",
    "V2_AND_UP",
    "DuplicateCase",
    "all_cases",
    "case",
    "load_cases",
    "register",
    "select_cases",
    "sort_key",
]

CASE_PACKAGE: Final = "snakepit_harness.conformance.cases"
ENTRY_POINT_GROUP: Final = "snakepit_harness.conformance_cases"

# Profile sets the stdio sections (§2-§6) apply to.
ALL_STDIO: Final = frozenset(STDIO_PROFILES)
V2_AND_UP: Final = frozenset({"v2", "enhanced"})

# Hierarchical, lower-case, dot-separated; each part may hold dashes and digits.
_ID_PATTERN: Final = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*(\.[a-z0-9]+(-[a-z0-9]+)*)+$")


class DuplicateCase(HarnessError):
    """Two cases claim the same id."""


class InvalidCase(HarnessError):
    """A case declaration is malformed (bad id, unknown level, ...)."""


_REGISTRY: dict[str, Case] = {}
_loaded_golden_dirs: set[Path] = set()
_modules_loaded = False


def register(new: Case) -> Case:
    """Add ``new`` to the registry (its id must be unused and well formed)."""
    return _add(_REGISTRY, new)


def _add(cases: dict[str, Case], new: Case) -> Case:
    if not _ID_PATTERN.match(new.id):
        raise InvalidCase(
            f"case id {new.id!r} is not hierarchical lower-case (like 'framing.zero-length')"
        )
    existing = cases.get(new.id)
    if existing is not None:
        if existing.source == new.source:
            return existing  # the same file or module loaded twice
        raise DuplicateCase(f"case {new.id} is declared twice: {existing.source} and {new.source}")
    cases[new.id] = new
    return new


def case(
    id: str,
    *,
    section: str,
    level: Level | str,
    profiles: Iterable[str],
    requirement: str,
    transport: str = "stdio",
    codecs: Iterable[str] | None = None,
    bridge: BridgeUse | str = BridgeUse.SHARED,
    gate: bool = False,
    timeout: float | None = None,
) -> Callable[[CaseFn], CaseFn]:
    """Decorator: declare the function as the body of case ``id``.

    The function receives the transport's case context (for stdio:
    :class:`snakepit_harness.conformance.drivers.stdio.StdioCaseContext`).
    """

    def decorate(fn: CaseFn) -> CaseFn:
        register(
            Case(
                id=id,
                section=section,
                level=Level(level),
                profiles=frozenset(profiles),
                requirement=requirement,
                run=fn,
                transport=transport,
                codecs=frozenset(codecs) if codecs is not None else None,
                bridge=BridgeUse(bridge),
                gate=gate,
                timeout=timeout,
                source=f"python:{fn.__module__}.{fn.__qualname__}",
            )
        )
        return fn

    return decorate


def _import_case_modules() -> None:
    global _modules_loaded
    if _modules_loaded:
        return
    package = importlib.import_module(CASE_PACKAGE)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        importlib.import_module(f"{CASE_PACKAGE}.{info.name}")
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(entry.value.split(":")[0])
    _modules_loaded = True


def load_cases(extra_golden_dirs: Sequence[Path] = ()) -> dict[str, Case]:
    """Every bundled case, plus the golden files of ``extra_golden_dirs``.

    Bundled cases (case modules, entry points, the shipped golden frames) are
    loaded once into the registry.  Extra directories are read on every call
    and never enter the registry, so one run's ``--golden-dir`` does not leak
    into the next run in the same process (the pytest plugin, tests, scripts).
    """
    from . import golden

    _import_case_modules()
    if golden.GOLDEN_DIR.resolve() not in _loaded_golden_dirs:
        for path in golden.golden_files(golden.GOLDEN_DIR):
            register(golden.load_case(path))
        _loaded_golden_dirs.add(golden.GOLDEN_DIR.resolve())
    cases = dict(_REGISTRY)
    for directory in extra_golden_dirs:
        for path in golden.golden_files(Path(directory).resolve()):
            _add(cases, golden.load_case(path))
    return cases


def _section_key(section: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in section.split("."))


def sort_key(c: Case) -> tuple[Any, ...]:
    """Run order: gates first, then by spec section, then by id."""
    return (not c.gate, _section_key(c.section), c.id)


def all_cases(extra_golden_dirs: Sequence[Path] = ()) -> list[Case]:
    """Every known case in run order."""
    return sorted(load_cases(extra_golden_dirs).values(), key=sort_key)


def select_cases(
    cases: Iterable[Case], include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[Case]:
    """Filter by id globs (``--case``, ``--exclude``).

    Gates are not added back: a filtered run judges exactly the cases asked for.
    """
    chosen = [
        c
        for c in cases
        if (not include or any(fnmatchcase(c.id, g) for g in include))
        and not any(fnmatchcase(c.id, g) for g in exclude)
    ]
    return chosen
