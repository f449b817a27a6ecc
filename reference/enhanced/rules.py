"""The tables of the enhanced bridge's safety policy (PROTOCOL §7.2), and how a refusal is worded.

Everything here is data a user can read and replace (``--allow-module``,
``--deny``, ``--undeny``, ``--show-policy``); the checks that apply it are
:class:`~snakepit_bridge.enhanced.safety.SafetyPolicy`, and the audit-hook
second line is :class:`~snakepit_bridge.enhanced.spawn_guard.SpawnGuard`.

The rules, each named in the ``forbidden`` answer so a user knows what to change:

``private_name``
    No step (module or attribute) may start with ``_``: this closes every dunder
    walk (``__class__``, ``__globals__``, ``__loader__``, ``__subclasses__``).
``module_not_allowed``
    Every module reached, by import or by an attribute step (checked with
    ``inspect.ismodule`` at each step), must be an allowlist entry or a submodule
    of one.  Modules off the list are never imported.
``defined_outside_allowlist``
    A function, class or other callable must be *defined* in an allowed module
    (its ``__module__``; for a bound method, that of its function or of the
    class that defines it), so ``os.system`` or builtin ``open`` re-exported
    under an allowed name is refused wherever it is found.
``denylisted``
    Callables and modules inside allowed packages that run code, unpickle data,
    touch files or load native code (:data:`DEFAULT_DENYLIST`, readable and
    replaceable).  An entry matches by dotted path, by the object's defining
    name (``module.qualname``) or by identity, so a re-export is caught too; an
    entry that names a module covers everything below it; ``*`` globs a name.
``unsafe_type``
    A non-callable object reached by a walk, or resolved from ``stored.``, must
    be plain data (``str``, ``int``, ``list``, ``dict``, ...) or an instance of a
    class defined in an allowed module: frames, code objects, generators,
    tracebacks and foreign objects (which lead to ``f_globals`` and friends) stop the walk.
``data_method``
    Methods of plain data types are allowed (``stored.text.upper``,
    ``stored.items.count``) except :data:`DENIED_DATA_METHODS`: ``str.format``
    and ``str.format_map`` walk attributes of their arguments
    (``"{0.__class__}"``), which would reopen the dunder walks.
``format_walk``
    A string argument holding a format field that walks a private attribute
    (``"{0.__init__.__globals__}"``) is refused: libraries in allowed packages
    may feed a user's string to ``str.format``.
``unsafe_flag``
    A library's own opt-in to running code, set anywhere in the arguments
    (:data:`UNSAFE_FLAGS`: ``trust_remote_code=True`` makes Transformers
    download and run code, ``allow_pickle=True`` unpickles, DSPy's
    ``allow_unsafe_lm_state``/``allow_custom_lm_class`` import classes named by
    data, ``weights_only=False`` makes torch unpickle).
``dispatch_name``
    pandas' apply-family methods (``apply``, ``agg``, ``transform``, ...)
    accept a method *name* as a string and look it up with ``getattr``; a name
    that is private or denylisted (``"query"``, ``"to_pickle"``) is refused.
``container_too_large``
    A container that came out of a call (not off the wire) and is passed back
    in by ``stored.`` reference is checked item by item up to
    :data:`DEEP_CHECK_BUDGET` items; past that it is refused rather than trusted.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from typing import Final

from ..adapter import ForbiddenError

__all__ = [
    "DEEP_CHECK_BUDGET",
    "DEFAULT_ALLOWED_MODULES",
    "DEFAULT_DENYLIST",
    "DENIED_DATA_METHODS",
    "FORMAT_WALK",
    "MAX_TARGET_LENGTH",
    "OPTIONAL_ALLOWED_MODULES",
    "PLAIN_DATA_TYPES",
    "STORED_PREFIX",
    "STRING_DISPATCH_METHODS",
    "UNSAFE_FLAGS",
    "default_allowed_modules",
    "forbidden",
    "installed",
    "is_module_name",
]

# The §7.2 reference allowlist: pure computation, no I/O, no way to run code.
DEFAULT_ALLOWED_MODULES: Final = ("math", "statistics", "json", "fractions", "decimal")
# Added when installed (found by importlib without importing them: importing
# pandas, DSPy or Transformers costs seconds and the init ping must be fast).
OPTIONAL_ALLOWED_MODULES: Final = ("pandas", "numpy", "dspy", "transformers")

# pandas writers take a path or a buffer (to_clipboard even runs xclip).
_PANDAS_WRITERS: Final = tuple(
    f"pandas.{cls}.{method}"
    for cls in ("DataFrame", "Series")
    for method in (
        "to_csv",
        "to_pickle",
        "to_parquet",
        "to_hdf",
        "to_sql",
        "to_excel",
        "to_feather",
        "to_stata",
        "to_clipboard",
        "to_html",
        "to_latex",
        "to_markdown",
        "to_xml",
        "to_orc",
        "to_json",
        "to_string",
        "to_iceberg",
        "to_xarray",
    )
)

# What the default denylist refuses inside allowed packages, and why.  Module
# entries cover their whole subtree; names cover re-exports by identity.
DEFAULT_DENYLIST: Final[tuple[str, ...]] = (
    # -- pandas: code evaluation, pickles, files, subprocesses, global state --
    "pandas.eval",  # expression evaluation
    "pandas.core.computation",  # the machinery behind eval/query
    "pandas.DataFrame.eval",
    "pandas.DataFrame.query",
    "pandas.read_*",  # every reader: files, URLs, pickles, SQL, clipboard (xclip)
    "pandas.to_pickle",
    "pandas.io",  # readers, writers, HDFStore, Styler (Jinja templates)
    "pandas.compat.pickle_compat",
    "pandas.ExcelFile",
    "pandas.ExcelWriter",
    "pandas.HDFStore",
    "pandas.DataFrame.style",  # Styler: templates from search paths
    "pandas.DataFrame.plot",  # plotting backends are imported by name
    "pandas.Series.plot",
    "pandas.plotting",
    "pandas.set_option",  # process-wide; plotting.backend imports any module
    "pandas.reset_option",
    "pandas.option_context",
    "pandas.options",
    "pandas.core.config_init",
    "pandas.api.extensions.register_*",  # patch pandas classes for every session
    "pandas.core.accessor",
    "pandas.core.apply",  # getattr dispatch on method names, unchecked
    "pandas.core.arraylike",  # getattr(obj, method)(...) on any object
    "pandas.core.internals",  # block managers: getattr dispatch, unchecked memory
    "pandas.core.methods",
    "pandas.core.common.temp_setattr",
    "pandas.core.indexes.extension",  # inherit_names patches classes
    "pandas.compat._optional",  # import_optional_dependency imports any module
    "pandas.show_versions",  # as_json=PATH writes a file
    "pandas.test",  # runs pytest
    "pandas.util",
    # -- numpy: pickles, files, native code, unchecked memory --
    "numpy.load",  # allow_pickle
    "numpy.save",
    "numpy.savez",
    "numpy.savez_compressed",
    "numpy.savetxt",
    "numpy.loadtxt",
    "numpy.genfromtxt",
    "numpy.fromfile",
    "numpy.fromregex",
    "numpy.memmap",  # creates and maps files
    "numpy.ndarray.tofile",
    "numpy.ndarray.dump",
    "numpy.ndarray.dumps",
    "numpy.ndarray.ctypes",  # raw pointers
    "numpy.ndarray.resize",  # refcheck=False frees memory still viewed
    "numpy.ctypeslib",  # load_library: any shared object
    "numpy.f2py",  # compiles and imports code
    "numpy.distutils",
    "numpy.testing",
    "numpy.test",
    "numpy.lib.npyio",
    "numpy.lib.format",  # read_array(allow_pickle=True)
    "numpy.lib.stride_tricks",  # as_strided reads/writes arbitrary memory
    "numpy.rec.fromfile",
    "numpy.ma.mrecords",
    "numpy.seterrcall",  # process-wide callback
    "numpy.core",  # the deprecated alias of numpy's private internals
    "numpy.info",  # imports any module named by its toplevel argument
    "numpy.lib.add_newdoc",  # imports any module by name
    "numpy.lib.add_docstring",  # rewrites docstrings of C objects in place
    "numpy.ma.dump",  # pickles (numpy < 2)
    "numpy.ma.dumps",
    "numpy.ma.load",
    "numpy.ma.loads",
    # -- DSPy: cloudpickle loading, code interpreters, files --
    "dspy.load",
    "dspy.load_settings",
    "dspy.Module.load",
    "dspy.Module.save",
    "dspy.BaseModule.load",
    "dspy.BaseModule.save",
    "dspy.PythonInterpreter",
    "dspy.LocalInterpreter",
    "dspy.CodeInterpreter",
    "dspy.ProgramOfThought",
    "dspy.CodeAct",
    "dspy.RLM",
    "dspy.resolve_interpreter_factory",
    "dspy.primitives.python_interpreter",
    "dspy.primitives.local_interpreter",
    "dspy.utils.saving",
    "dspy.configure_cache",
    "dspy.*.save",  # Module/Embeddings/settings writers (a path argument)
    "dspy.*.load",  # and their loaders (cloudpickle with allow_pickle)
    "dspy.clients.lm_local",  # launches local model servers (subprocesses)
    "dspy.clients.cache",  # load_memory_cache unpickles
    # -- Transformers: remote code, subprocess helpers --
    "transformers.dynamic_module_utils",
    "transformers.utils.import_utils",
    "transformers.agents",
    "transformers.tools",
    "transformers.testing_utils",
    "transformers.commands",
    "transformers.*.save_pretrained",  # writes files under any path
    "transformers.*.push_to_hub",  # uploads
    "transformers.Trainer",  # checkpoints to disk, reloads them with pickle
    "transformers.Seq2SeqTrainer",
    # -- the standard modules' command-line entry points (they read the bridge's stdin) --
    "json.tool",
    # -- decimal: the process-wide contexts every session shares --
    "decimal.getcontext",
    "decimal.setcontext",
    "decimal.localcontext",
    "decimal.DefaultContext",
    "decimal.BasicContext",
    "decimal.ExtendedContext",
    *_PANDAS_WRITERS,
)

# Builtin data types whose instances are safe to hold and whose methods are safe
# to call (with the exceptions below).
PLAIN_DATA_TYPES: Final[frozenset[type]] = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        complex,
        str,
        bytes,
        bytearray,
        list,
        tuple,
        dict,
        set,
        frozenset,
        range,
        slice,
    }
)
# str.format/format_map resolve "{0.attr}" and "{0[key]}" fields: a dunder walk
# in a string.  Refused on every str (and str subclass, such as numpy.str_).
DENIED_DATA_METHODS: Final = frozenset({"format", "format_map"})

STORED_PREFIX: Final = "stored"
# Longer targets are not names anyone types; the cap keeps error messages short.
MAX_TARGET_LENGTH: Final = 1024
# Items checked in a call-made container passed back by reference; a million
# numbers take ~0.1 s here, so this bounds the cost of one argument.
DEEP_CHECK_BUDGET: Final = 1_000_000
# Keyword arguments by which libraries opt in to running code, and the value
# that opts in (True, except torch's weights_only, which is unsafe when False).
UNSAFE_FLAGS: Final[dict[str, bool]] = {
    "trust_remote_code": True,
    "allow_pickle": True,
    "allow_unsafe_lm_state": True,
    "allow_custom_lm_class": True,
    "allow_dangerous_deserialization": True,
    "weights_only": False,
}
# pandas methods that accept the name of a method as a string (getattr dispatch).
STRING_DISPATCH_METHODS: Final = frozenset(
    {"apply", "agg", "aggregate", "transform", "map", "applymap", "pipe", "filter"}
)
# "{0.__class__}", "{x[0]._y}": a format field stepping into a private name.
FORMAT_WALK: Final = re.compile(r"\{[^{}]*[.\[]\s*_")


@functools.cache
def installed(module: str) -> bool:
    """True if ``module`` can be imported here (found without importing it; cached,
    since ping asks every time and a search of sys.path costs milliseconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def is_module_name(text: str) -> bool:
    """True for a dotted name that can name a module (``numpy.linalg``)."""
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def default_allowed_modules() -> tuple[str, ...]:
    """The reference allowlist: the five stdlib modules plus the installed frameworks."""
    return DEFAULT_ALLOWED_MODULES + tuple(m for m in OPTIONAL_ALLOWED_MODULES if installed(m))


def forbidden(rule: str, detail: str) -> ForbiddenError:
    """The one way refusals are worded: the rule's name, then what was refused."""
    return ForbiddenError(f"forbidden by rule {rule!r}: {detail}")
