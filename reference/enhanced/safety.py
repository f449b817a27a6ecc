"""Safe resolution of dotted targets (PROTOCOL §7.2): the enhanced bridge's core.

A target such as ``pandas.DataFrame``, ``math.sqrt`` or ``stored.df.head`` is
never evaluated as code.  It is split at dots; the longest *allowed* module
prefix is imported and the rest is walked with ``getattr``, one attribute at a
time, and every object reached on the way is checked by :meth:`SafetyPolicy.check_object`.
The same checks run for ``stored.`` targets, every ``pipeline`` step,
``inspect`` and every ``"stored.ID"`` reference inside ``args``/``kwargs``.

Every rule is named in the ``forbidden`` answer so a user knows what to change;
:mod:`~snakepit_bridge.enhanced.rules` lists them with the tables they apply
(the allowlist, the denylist, plain data types, unsafe flags).

Besides, :class:`SpawnGuard` is a second line: while a command runs, an audit
hook (PEP 578) refuses process creation and the unpickling of known code-running
globals, so a gap in the rules above still cannot start a program.

Decisions (the spec leaves room): a ``stored.`` reference takes the longest
stored id that prefixes it (ids may contain dots); a target naming a module
(``call {"target": "math"}``) returns the module's serialised description; a
non-callable target with ``args`` is ``bad_request``.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import inspect
import sys
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Final

from ..adapter import BadRequestError, NotFoundError

# The tables this module applies, plus the few it does not (DEFAULT_ALLOWED_MODULES,
# OPTIONAL_ALLOWED_MODULES, installed, SpawnGuard): everything lived here before
# the split, and the old import paths still work.  Import from snakepit_bridge.enhanced.
from .rules import (  # noqa: F401
    DEEP_CHECK_BUDGET,
    DEFAULT_ALLOWED_MODULES,
    DEFAULT_DENYLIST,
    DENIED_DATA_METHODS,
    FORMAT_WALK,
    MAX_TARGET_LENGTH,
    OPTIONAL_ALLOWED_MODULES,
    PLAIN_DATA_TYPES,
    STORED_PREFIX,
    STRING_DISPATCH_METHODS,
    UNSAFE_FLAGS,
    default_allowed_modules,
    forbidden,
    installed,
    is_module_name,
)
from .spawn_guard import SpawnGuard  # noqa: F401

__all__ = ["Resolved", "SafetyPolicy"]


def _under(module: str, allowed: Iterable[str]) -> bool:
    return any(module == entry or module.startswith(entry + ".") for entry in allowed)


@dataclass
class Resolved:
    """What a target resolved to: the object, and the object it was taken from."""

    value: Any
    path: str


@dataclass
class SafetyPolicy:
    """The allowlist and denylist, and every check of §7.2.

    ``allowed_modules`` are module names (a name allows its submodules);
    ``denylist`` entries are dotted names as in :data:`DEFAULT_DENYLIST`.
    """

    allowed_modules: tuple[str, ...] = field(default_factory=default_allowed_modules)
    denylist: tuple[str, ...] = DEFAULT_DENYLIST
    _denied_ids: dict[int, str] = field(default_factory=dict, repr=False)
    _denied_keep: list[Any] = field(default_factory=list, repr=False)
    _unresolved: list[str] = field(default_factory=list, repr=False)
    _modules_seen: int = field(default=-1, repr=False)
    _plain_entries: frozenset[str] = field(default=frozenset(), repr=False)
    _glob_entries: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        for name in self.allowed_modules:
            if not is_module_name(name):
                raise ValueError(f"not a module name: {name!r}")
        self.allowed_modules = tuple(dict.fromkeys(self.allowed_modules))
        self.denylist = tuple(self.denylist)
        self._unresolved = list(self.denylist)
        self._glob_entries = [e for e in self.denylist if any(ch in e for ch in "*?[")]
        self._plain_entries = frozenset(self.denylist) - frozenset(self._glob_entries)

    # -- names ---------------------------------------------------------------

    def module_allowed(self, name: str) -> bool:
        return _under(name, self.allowed_modules)

    def denied_by_name(self, *names: str) -> str | None:
        """The denylist entry covering any of ``names``, if there is one.

        Plain entries are looked up by each dotted prefix of a name (a set
        lookup per dot, not a scan of the list); only glob entries are matched.
        """
        for name in names:
            if not name:
                continue
            end = -1
            while True:
                end = name.find(".", end + 1)
                prefix = name if end < 0 else name[:end]
                if prefix in self._plain_entries:
                    return prefix
                if end < 0:
                    break
            for entry in self._glob_entries:
                if fnmatch.fnmatchcase(name, entry):
                    return entry
        return None

    def denied_by_identity(self, *objects: Any) -> str | None:
        self._resolve_denylist()
        for obj in objects:
            entry = self._denied_ids.get(id(obj))
            if entry is not None:
                return entry
        return None

    def _resolve_denylist(self) -> None:
        """Find the objects denylist entries name, for identity matches.

        Only in modules that are already imported (the denylist must not import
        pandas to be checked); retried whenever more modules have been imported.
        """
        if len(sys.modules) == self._modules_seen or not self._unresolved:
            return
        self._modules_seen = len(sys.modules)
        still: list[str] = []
        for entry in self._unresolved:
            found = _resolve_trusted(entry)
            if found is None:
                still.append(entry)
                continue
            for obj in found:
                if isinstance(obj, int | str | float | bool) or obj is None:
                    continue  # interned values are shared, not identities
                self._denied_ids.setdefault(id(obj), entry)
                self._denied_keep.append(obj)  # ids stay valid while we hold them
                func = getattr(obj, "__func__", None)
                if func is not None:
                    self._denied_ids.setdefault(id(func), entry)
                    self._denied_keep.append(func)
        self._unresolved = still

    # -- objects -------------------------------------------------------------

    def check_object(self, obj: Any, path: str) -> None:
        """Raise :class:`ForbiddenError` unless ``obj`` (reached as ``path``) is allowed."""
        if inspect.ismodule(obj):
            name = getattr(obj, "__name__", "?")
            if not isinstance(name, str) or not self.module_allowed(name):
                raise forbidden(
                    "module_not_allowed",
                    f"{path!r} reaches module {name!r}, which is not on the allowlist "
                    f"({', '.join(self.allowed_modules)}); add it with --allow-module",
                )
            entry = self.denied_by_name(name, path)
            if entry:
                raise forbidden("denylisted", f"{path!r} is module {name!r} (entry {entry!r})")
            return
        if isinstance(obj, type):
            self._check_defined_in(
                obj, obj.__module__, f"{obj.__module__}.{obj.__qualname__}", path
            )
            return
        if callable(obj) or isinstance(obj, _DESCRIPTOR_TYPES):
            self._check_callable(obj, path)
            return
        self._check_data(obj, path)

    def _check_defined_in(self, obj: Any, module: Any, canonical: str, path: str) -> None:
        if not isinstance(module, str) or not self.module_allowed(module):
            raise forbidden(
                "defined_outside_allowlist",
                f"{path!r} is {_kind(obj)} defined in module {module!r}, "
                "which is not on the allowlist",
            )
        entry = self.denied_by_name(path, canonical) or self.denied_by_identity(
            obj, getattr(obj, "__func__", None), getattr(obj, "__wrapped__", None)
        )
        if entry:
            raise forbidden("denylisted", f"{path!r} is {canonical!r} (entry {entry!r})")

    def _check_callable(self, obj: Any, path: str) -> None:
        if inspect.ismethod(obj):  # a Python function bound to an object or class
            func = obj.__func__
            module = getattr(func, "__module__", None)
            qualname = getattr(func, "__qualname__", getattr(func, "__name__", "?"))
            self._check_defined_in(obj, module, f"{module}.{qualname}", path)
            if not inspect.isfunction(func):
                self._check_callable(func, path)
            return
        if inspect.isfunction(obj):
            module = obj.__module__
            self._check_defined_in(obj, module, f"{module}.{obj.__qualname__}", path)
            return
        if isinstance(obj, _BUILTIN_METHOD_TYPES):
            self._check_builtin_method(obj, path)
            return
        if isinstance(obj, _DESCRIPTOR_TYPES):  # e.g. numpy.ndarray.tofile, unbound
            owner = obj.__objclass__
            name = getattr(obj, "__name__", "?")
            if owner in PLAIN_DATA_TYPES:
                self._check_data_method(owner, name, path)
                return
            canonical = f"{owner.__module__}.{owner.__qualname__}.{name}"
            self._check_defined_in(obj, owner.__module__, canonical, path)
            return
        # A callable instance (numpy ufunc, dspy module, functools wrapper, ...):
        # judged by its class; a cache wrapper by the function it wraps.
        cls = type(obj)
        wrapped = getattr(obj, "__wrapped__", None)
        if cls in _TRANSPARENT_WRAPPERS and wrapped is not None:
            self.check_object(wrapped, path)
            return
        self._check_defined_in(obj, cls.__module__, f"{cls.__module__}.{cls.__qualname__}", path)
        module = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if isinstance(module, str) and isinstance(qualname, str):
            entry = self.denied_by_name(f"{module}.{qualname}")
            if entry:
                raise forbidden("denylisted", f"{path!r} is {module}.{qualname} (entry {entry!r})")

    def _check_builtin_method(self, obj: Any, path: str) -> None:
        name = getattr(obj, "__name__", "?")
        owner = getattr(obj, "__self__", None)
        if owner is None or inspect.ismodule(owner):  # a module-level C function
            module = getattr(obj, "__module__", None)
            if not isinstance(module, str) and owner is not None:
                module = owner.__name__
            self._check_defined_in(obj, module, f"{module}.{name}", path)
            return
        if isinstance(owner, type):  # a C classmethod such as dict.fromkeys
            cls = owner
        else:  # bound to an instance: find the class that defines the method
            cls = next((c for c in type(owner).__mro__ if name in vars(c)), type(owner))
        if cls in PLAIN_DATA_TYPES or isinstance(owner, str):
            self._check_data_method(cls, name, path)
            return
        canonical = f"{cls.__module__}.{cls.__qualname__}.{name}"
        self._check_defined_in(obj, cls.__module__, canonical, path)

    def _check_data_method(self, cls: type, name: str, path: str) -> None:
        if name in DENIED_DATA_METHODS:
            raise forbidden(
                "data_method",
                f"{path!r} is {cls.__name__}.{name}, which walks attributes of its "
                "arguments through format fields",
            )
        entry = self.denied_by_name(path)
        if entry:
            raise forbidden("denylisted", f"{path!r} (entry {entry!r})")

    def _check_data(self, obj: Any, path: str) -> None:
        cls = type(obj)
        if cls not in PLAIN_DATA_TYPES and not self.module_allowed(cls.__module__):
            raise forbidden(
                "unsafe_type",
                f"{path!r} is a {cls.__module__}.{cls.__qualname__} object; only plain "
                "data and instances of classes from allowed modules can be reached",
            )
        entry = self.denied_by_name(path) or self.denied_by_identity(obj)
        if entry is None and cls not in PLAIN_DATA_TYPES:
            entry = self.denied_by_name(f"{cls.__module__}.{cls.__qualname__}")
        if entry:
            raise forbidden("denylisted", f"{path!r} (entry {entry!r})")

    def check_value_deep(self, value: Any, path: str, budget: int = DEEP_CHECK_BUDGET) -> None:
        """``check_object`` on ``value`` and on everything inside its plain containers."""
        stack: list[tuple[Any, str]] = [(value, path)]
        seen: set[int] = set()
        while stack:
            obj, where = stack.pop()
            cls = type(obj)
            if cls in _SCALARS:
                continue
            budget -= 1
            if budget < 0:
                raise forbidden(
                    "container_too_large",
                    f"{path!r} holds more than {DEEP_CHECK_BUDGET} items to check; "
                    "store it as a numpy array or pandas object instead",
                )
            self.check_object(obj, where)
            if cls in (list, tuple, set, frozenset) and id(obj) not in seen:
                seen.add(id(obj))
                stack.extend((item, f"{where}[{i}]") for i, item in enumerate(obj))
            elif cls is dict and id(obj) not in seen:
                seen.add(id(obj))
                for key, item in obj.items():
                    stack.append((key, f"{where} key"))
                    stack.append((item, f"{where}[{key!r}]"))

    # -- arguments -----------------------------------------------------------

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Rules on the wire data of a call's arguments (before references resolve)."""
        for key, value in _walk_wire((list(args), dict(kwargs))):
            unsafe = UNSAFE_FLAGS.get(key) if key is not None else None
            if unsafe is not None and bool(value) is unsafe and isinstance(value, bool | int):
                raise forbidden(
                    "unsafe_flag", f"{key}={value!r} would let the library run or unpickle code"
                )
            if isinstance(value, str) and FORMAT_WALK.search(value):
                raise forbidden(
                    "format_walk",
                    f"argument {value[:80]!r} holds a format field that walks a private name",
                )

    def check_dispatch(self, fn: Any, path: str, values: Iterable[Any]) -> None:
        """Refuse private or denylisted method names passed to pandas' apply family."""
        name = getattr(fn, "__name__", None)
        module = getattr(getattr(fn, "__func__", fn), "__module__", None) or ""
        if name not in STRING_DISPATCH_METHODS or not _under(module, ("pandas",)):
            return
        for _, value in _walk_wire(list(values)):
            if not isinstance(value, str):
                continue
            if value.startswith("_"):
                raise forbidden("dispatch_name", f"{path!r} given private name {value!r}")
            for entry in self.denylist:
                last = entry.rpartition(".")[2]
                if value == last or (
                    any(ch in last for ch in "*?[") and fnmatch.fnmatchcase(value, last)
                ):
                    raise forbidden(
                        "dispatch_name",
                        f"{path!r} given method name {value!r}, denylisted as {entry!r}",
                    )

    # -- resolution ----------------------------------------------------------

    def resolve(self, target: Any, stored: Mapping[str, Any]) -> Resolved:
        """Resolve ``target`` to an object, checking every step (§7.1, §7.2)."""
        if not isinstance(target, str) or not target:
            raise BadRequestError("target must be a non-empty string such as 'math.sqrt'")
        if len(target) > MAX_TARGET_LENGTH:
            raise BadRequestError(f"target is longer than {MAX_TARGET_LENGTH} characters")
        parts = target.split(".")
        if parts[0] == STORED_PREFIX:
            return self._resolve_stored(target, parts, stored)
        return self._resolve_module(target, parts)

    def _resolve_stored(self, target: str, parts: list[str], stored: Mapping[str, Any]) -> Resolved:
        if len(parts) < 2:
            raise BadRequestError("a stored target is 'stored.ID' or 'stored.ID.attribute...'")
        for cut in range(len(parts), 1, -1):
            key = ".".join(parts[1:cut])
            if key in stored:
                break
        else:
            _check_names(target, parts[1:])
            raise NotFoundError(f"no stored object matches {target!r} in this session")
        attrs = parts[cut:]
        _check_names(target, attrs)
        path = f"{STORED_PREFIX}.{key}"
        obj = stored[key]
        self.check_object(obj, path)
        return self._walk(obj, path, attrs)

    def _resolve_module(self, target: str, parts: list[str]) -> Resolved:
        _check_names(target, parts)
        module = None
        for cut in range(len(parts), 0, -1):
            name = ".".join(parts[:cut])
            if not self.module_allowed(name):
                continue
            for prefix_cut in range(1, cut + 1):  # refuse before importing anything denied
                prefix = ".".join(parts[:prefix_cut])
                entry = self.denied_by_name(prefix)
                if entry:
                    raise forbidden(
                        "denylisted", f"{target!r} reaches {prefix!r} (entry {entry!r})"
                    )
            if name in _NOT_MODULES:
                continue
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                missing = exc.name or ""
                if missing == name or name.startswith(missing + ".") or missing.startswith(name):
                    _remember_not_module(name)
                    continue  # not a module by that name: try a shorter prefix
                raise
            break
        if module is None:
            first = parts[0]
            if self.module_allowed(first):
                raise NotFoundError(f"module {first!r} is allowed but not installed")
            raise forbidden(
                "module_not_allowed",
                f"{target!r}: module {first!r} is not on the allowlist "
                f"({', '.join(self.allowed_modules)}); add it with --allow-module",
            )
        path = module.__name__
        self.check_object(module, path)
        return self._walk(module, path, parts[cut:])

    def _walk(self, obj: Any, path: str, attrs: Sequence[str]) -> Resolved:
        for attr in attrs:
            self._check_step(obj, attr, f"{path}.{attr}")
            try:
                obj = getattr(obj, attr)
            except AttributeError:
                raise NotFoundError(f"{path!r} has no attribute {attr!r}") from None
            path = f"{path}.{attr}"
            self.check_object(obj, path)
        return Resolved(obj, path)

    def _check_step(self, obj: Any, attr: str, path: str) -> None:
        """Refuse a denylisted attribute *before* ``getattr`` runs its code.

        The attribute is named by where it is defined (``numpy.ndarray.ctypes``
        for ``stored.arr.ctypes``) and compared by identity with what it is (a
        property, a function), so a property or a lazy submodule import never runs.
        """
        if inspect.ismodule(obj):
            name = f"{obj.__name__}.{attr}"
            raw = vars(obj).get(attr)
        else:
            cls = obj if isinstance(obj, type) else type(obj)
            owner = next((c for c in cls.__mro__ if attr in vars(c)), None)
            if owner is None:
                return  # an instance attribute or a __getattr__ answer: checked once reached
            name = f"{owner.__module__}.{owner.__qualname__}.{attr}"
            raw = vars(owner)[attr]
        entry = self.denied_by_name(name, path) or (
            self.denied_by_identity(raw, getattr(raw, "__func__", None), getattr(raw, "fget", None))
            if raw is not None
            else None
        )
        if entry:
            raise forbidden("denylisted", f"{path!r} is {name!r} (entry {entry!r})")


_SCALARS: Final = frozenset({type(None), bool, int, float, complex, str, bytes})
_BUILTIN_METHOD_TYPES: Final = (types.BuiltinFunctionType, types.BuiltinMethodType)
_DESCRIPTOR_TYPES: Final = (
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
)
# Wrappers that only add caching: judged by the function inside.
_TRANSPARENT_WRAPPERS: Final = frozenset({type(functools.lru_cache(maxsize=1)(lambda: None))})


# Dotted names that failed to import as modules ("math.sqrt"): a failed import
# costs a ModuleNotFoundError and a path search on every call, so it is
# remembered.  Bounded so a caller inventing names cannot grow it for ever.
_NOT_MODULES: dict[str, None] = {}
NOT_MODULES_CACHE: Final = 4096


def _remember_not_module(name: str) -> None:
    if len(_NOT_MODULES) >= NOT_MODULES_CACHE:
        del _NOT_MODULES[next(iter(_NOT_MODULES))]  # oldest first
    _NOT_MODULES[name] = None


def _kind(obj: Any) -> str:
    if isinstance(obj, type):
        return "a class"
    if inspect.isroutine(obj):
        return "a function"
    return f"a callable {type(obj).__name__}"


def _check_names(target: str, names: Iterable[str]) -> None:
    for name in names:
        if not name.isidentifier():
            raise BadRequestError(f"target {target!r}: {name!r} is not a name")
        if name.startswith("_"):
            raise forbidden("private_name", f"{target!r} steps into {name!r}")


def _walk_wire(value: Any) -> Iterator[tuple[str | None, Any]]:
    """Every (dict key or None, value) pair inside wire data, iteratively (no recursion)."""
    stack: list[tuple[str | None, Any]] = [(None, value)]
    while stack:
        key, item = stack.pop()
        yield key, item
        if isinstance(item, list | tuple):
            stack.extend((None, x) for x in item)
        elif isinstance(item, dict):
            stack.extend((k if isinstance(k, str) else None, v) for k, v in item.items())


def _resolve_trusted(entry: str) -> list[Any] | None:
    """Objects a denylist entry names, if its top module is already imported.

    Entries are configuration, not requests, so this walk is unchecked; it
    imports nothing new except submodules of an imported package that the
    entry names.
    """
    parts = entry.split(".")
    if parts[0] not in sys.modules:
        return None
    *head, last = parts
    obj: Any = sys.modules[parts[0]]
    for i, part in enumerate(head[1:], start=2):
        name = ".".join(parts[:i])
        nxt = sys.modules.get(name)
        if nxt is None:
            try:
                nxt = getattr(obj, part)
            except Exception:
                return []
        obj = nxt
    if any(ch in last for ch in "*?["):
        try:
            names = [n for n in dir(obj) if fnmatch.fnmatchcase(n, last)]
        except Exception:
            return []
        found = []
        for n in names:
            try:
                found.append(getattr(obj, n))
            except Exception:
                continue
        return found
    if len(parts) == 1:
        return [obj]
    try:
        # A class attribute as stored (a property stays a property).
        raw = inspect.getattr_static(obj, last)
    except AttributeError:
        return []
    found = [raw]
    if isinstance(raw, classmethod | staticmethod):
        found.append(raw.__func__)
    elif isinstance(raw, property) and raw.fget is not None:
        found.append(raw.fget)
    with suppress(Exception):
        found.append(getattr(obj, last))
    return found
