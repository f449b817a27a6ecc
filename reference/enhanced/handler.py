"""The enhanced bridge's commands (PROTOCOL §7) on top of the generic ones (§6).

:class:`EnhancedCommandHandler` adds ``call``, ``store``, ``retrieve``,
``list_stored``, ``delete_stored``, ``clear_session``, ``pipeline`` and
``inspect`` to ``ping``/``echo``/``compute``/``info``.  Resolution and every
safety rule live in :mod:`.safety`, the per-session store in :mod:`.store`,
result shapes in :mod:`.serialize` and :mod:`.plugins`; this module only
validates arguments and strings those together.

Decisions where §7 leaves room:

* ``"stored.ID"`` (or ``"stored.ID.attr..."``) anywhere inside ``args``/``kwargs``
  (list items and dict values, at any depth; not dict keys) is replaced by the
  object, resolved with the same checks as a target but never called.  Such a
  string naming no stored object is ``not_found`` (a typo should not silently
  become a string argument).  Values ``store``\\ d from the wire are plain data;
  objects made by calls are re-checked item by item when passed back.
* ``call`` with ``store_as`` stores the result even when its description then
  fails to serialise (the error says so): a model need not be describable to
  be kept.  Storing under an existing id replaces it (a dictionary).
* ``pipeline`` steps run in the pipeline's session (a step naming another
  ``session_id`` is ``bad_request``); a failing step keeps its ``error_type``
  and the message starts ``pipeline step N``; objects stored by earlier steps
  stay stored (no rollback: a pipeline is a sequence of calls, not a transaction).
* ``ping``'s ``stored_objects`` counts every session's objects; with a
  ``session_id`` in its args it also reports ``session_objects``.
"""

from __future__ import annotations

import contextlib
import inspect as pyinspect
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from snakepit_harness.protocol import ENHANCED_COMMANDS

from ..adapter import BadRequestError, CommandError, SerializationError
from ..generic import GenericCommandHandler
from .plugins import PLUGINS, Plugin, available_frameworks, plugin_serializers
from .rules import STORED_PREFIX, forbidden
from .safety import SafetyPolicy
from .serialize import DEFAULT_LIMITS, SerializationLimits, Serializer
from .spawn_guard import SpawnGuard
from .store import (
    DEFAULT_MAX_STORED,
    ObjectStore,
    SessionView,
    check_id,
    check_name,
    check_session,
)

__all__ = ["ENHANCED_COMMANDS", "MAX_PIPELINE_STEPS", "EnhancedCommandHandler"]

# A pipeline is a script of calls, not a loop; a cap keeps one request bounded.
MAX_PIPELINE_STEPS: Final = 1000
# Enough of a docstring to read in a terminal; the rest is a click away.
MAX_DOCSTRING: Final = 4000
# Names listed by inspect's ``attributes``.
MAX_INSPECT_ATTRIBUTES: Final = 200


class EnhancedCommandHandler(GenericCommandHandler):
    """The reference enhanced adapter: safe dynamic calls and a per-session store."""

    bridge_type: ClassVar[str] = "enhanced"
    bridge_name: ClassVar[str] = "snakepit-enhanced-bridge"
    bridge_version: ClassVar[str] = "2.0.0"

    def __init__(
        self,
        policy: SafetyPolicy | None = None,
        max_stored: int = DEFAULT_MAX_STORED,
        limits: SerializationLimits = DEFAULT_LIMITS,
        plugins: tuple[Plugin, ...] = PLUGINS,
    ) -> None:
        self.policy = policy if policy is not None else SafetyPolicy()
        self.store = ObjectStore(max_stored)
        self.plugins = plugins
        self.serializer = Serializer(limits, plugin_serializers(plugins))
        super().__init__()

    def _register_commands(self) -> None:
        super()._register_commands()
        for name in ENHANCED_COMMANDS:
            self.register_command(name, getattr(self, f"cmd_{name}"))

    # -- generic commands, extended --------------------------------------------

    def ping_result(self, args: dict[str, Any]) -> dict[str, Any]:
        result = super().ping_result(args)
        result["frameworks_available"] = available_frameworks(self.plugins)
        result["stored_objects"] = self.store.count()
        session = args.get("session_id")
        if isinstance(session, str):
            result["session_objects"] = self.store.count(session)
        return result

    def info_result(self, args: dict[str, Any]) -> dict[str, Any]:
        result = super().info_result(args)
        result["enhanced_info"] = {
            "allowed_modules": list(self.policy.allowed_modules),
            "denylist": list(self.policy.denylist),
            "max_stored_per_session": self.store.max_per_session,
            "frameworks_available": available_frameworks(self.plugins),
        }
        return result

    # -- call and pipeline -------------------------------------------------------

    def cmd_call(self, args: dict[str, Any]) -> dict[str, Any]:
        """``call {target, args?, kwargs?, store_as?, session_id?}`` (§7.1)."""
        return self._run_call(args, check_session(args))

    def cmd_pipeline(self, args: dict[str, Any]) -> dict[str, Any]:
        """``pipeline {steps: [call-args, ...]}`` (§7.4): in order, stop at the first failure."""
        session = check_session(args)
        steps = args.get("steps")
        if not isinstance(steps, list):
            raise BadRequestError("pipeline needs 'steps', a list of call arguments")
        if len(steps) > MAX_PIPELINE_STEPS:
            raise BadRequestError(f"a pipeline has at most {MAX_PIPELINE_STEPS} steps")
        results: list[dict[str, Any]] = []
        for index, step in enumerate(steps):
            try:
                if not isinstance(step, dict):
                    raise BadRequestError(f"a step must be an object, not {type(step).__name__}")
                if step.get("session_id", session) != session:
                    raise BadRequestError("a step runs in the pipeline's session_id")
                results.append(self._run_call(step, session))
            except CommandError as exc:
                raise type(exc)(self._step_failure(index, step, exc)) from exc
            except Exception as exc:
                raise CommandError(
                    self._step_failure(index, step, f"{type(exc).__name__}: {exc}")
                ) from exc
        return {"status": "ok", "pipeline_results": results, "steps_completed": len(results)}

    @staticmethod
    def _step_failure(index: int, step: Any, error: object) -> str:
        target = step.get("target") if isinstance(step, dict) else None
        return (
            f"pipeline step {index} (target {target!r}) failed: {error}; "
            f"{index} step(s) completed, later steps not run"
        )

    def _run_call(self, spec: Mapping[str, Any], session: str) -> dict[str, Any]:
        target = spec.get("target")
        call_args = spec.get("args")
        call_kwargs = spec.get("kwargs")
        call_args = [] if call_args is None else call_args
        call_kwargs = {} if call_kwargs is None else call_kwargs
        if not isinstance(call_args, list):
            raise BadRequestError("'args' must be a list")
        if not isinstance(call_kwargs, dict) or not all(isinstance(k, str) for k in call_kwargs):
            raise BadRequestError("'kwargs' must be an object with string keys")
        store_as = spec.get("store_as")
        if store_as is not None:
            check_name(store_as, "store_as")
        self.policy.check_arguments(call_args, call_kwargs)
        view = self.store.view(session)
        resolved = self.policy.resolve(target, view)
        fn = resolved.value
        if callable(fn):
            positional = self._resolve_refs(call_args, view)
            keywords = self._resolve_refs(call_kwargs, view)
            self.policy.check_dispatch(fn, resolved.path, [positional, keywords])
            with SpawnGuard.active():
                try:
                    result = fn(*positional, **keywords)
                except SystemExit as exc:
                    # A library's command-line code (argparse, sys.exit) must not
                    # end the bridge for everyone: the call fails instead.
                    raise forbidden(
                        "no_exit", f"{resolved.path!r} tried to exit the bridge (code {exc.code!r})"
                    ) from None
        else:
            if call_args or call_kwargs:
                raise BadRequestError(
                    f"{target!r} is a {type(fn).__name__}, not callable: it takes no arguments"
                )
            result = fn
        if store_as is not None:
            self.store.put(session, store_as, result, from_wire=False)
        try:
            shape = self.serializer.serialize(result)
        except SerializationError as exc:
            if store_as is None:
                raise
            raise SerializationError(f"{exc} (the object is stored as {store_as!r})") from None
        return {"status": "ok", "result": shape, "stored_as": store_as, "target": target}

    def _resolve_refs(self, value: Any, view: SessionView) -> Any:
        """Replace ``"stored.…"`` strings (list items, dict values, any depth) by objects."""
        try:
            return self._substitute(value, view)
        except RecursionError:
            raise BadRequestError("arguments nested too deeply") from None

    def _substitute(self, value: Any, view: SessionView) -> Any:
        if isinstance(value, str):
            if not value.startswith(STORED_PREFIX + "."):
                return value
            resolved = self.policy.resolve(value, view)
            key = value[len(STORED_PREFIX) + 1 :]
            if not (key in view and view.entry(key).from_wire):
                self.policy.check_value_deep(resolved.value, resolved.path)
            return resolved.value
        if isinstance(value, list):
            return [self._substitute(item, view) for item in value]
        if isinstance(value, dict):
            return {key: self._substitute(item, view) for key, item in value.items()}
        return value

    # -- the store -------------------------------------------------------------

    def cmd_store(self, args: dict[str, Any]) -> dict[str, Any]:
        """``store {id, value}`` (§7.3)."""
        session = check_session(args)
        key = check_id(args.get("id"))
        if "value" not in args:
            raise BadRequestError("store needs a 'value'")
        created = self.store.put(session, key, args["value"], from_wire=True)
        return {"status": "ok", "id": key, "stored": True, "replaced": not created}

    def cmd_retrieve(self, args: dict[str, Any]) -> dict[str, Any]:
        """``retrieve {id}`` → ``object`` (§7.3)."""
        key = check_id(args.get("id"))
        value = self.store.get(check_session(args), key)
        return {"status": "ok", "id": key, "object": self.serializer.serialize(value)}

    def cmd_list_stored(self, args: dict[str, Any]) -> dict[str, Any]:
        """``list_stored`` → ``stored_objects`` (ids, oldest first) and ``count``."""
        ids = self.store.ids(check_session(args))
        return {"status": "ok", "stored_objects": ids, "count": len(ids)}

    def cmd_delete_stored(self, args: dict[str, Any]) -> dict[str, Any]:
        """``delete_stored {id}``: the object is released at once (§7.3)."""
        key = check_id(args.get("id"))
        self.store.delete(check_session(args), key)
        return {"status": "ok", "id": key, "deleted": True}

    def cmd_clear_session(self, args: dict[str, Any]) -> dict[str, Any]:
        """``clear_session``: drop this session's objects, and only this session's."""
        session = check_session(args)
        cleared = self.store.clear(session)
        return {"status": "ok", "session_id": session, "cleared": cleared}

    # -- inspect -----------------------------------------------------------------

    def cmd_inspect(self, args: dict[str, Any]) -> dict[str, Any]:
        """``inspect {target}`` → ``inspection`` (§7.5); resolved under the §7.2 rules."""
        view = self.store.view(check_session(args))
        obj = self.policy.resolve(args.get("target"), view).value
        inspection: dict[str, Any] = {
            "type": type(obj).__name__,
            "module": _module_of(obj),
            "callable": callable(obj),
        }
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if isinstance(name, str):
            inspection["name"] = name
        doc = pyinspect.getdoc(obj)
        if doc:
            inspection["docstring"] = doc[:MAX_DOCSTRING]
        if callable(obj):
            with contextlib.suppress(TypeError, ValueError):
                inspection["signature"] = str(pyinspect.signature(obj))
        try:
            names = [n for n in dir(obj) if isinstance(n, str) and not n.startswith("_")]
        except Exception:
            names = []
        inspection["attributes"] = names[:MAX_INSPECT_ATTRIBUTES]
        return {"status": "ok", "target": args.get("target"), "inspection": inspection}


def _module_of(obj: Any) -> str | None:
    if pyinspect.ismodule(obj):
        return str(obj.__name__)
    module = getattr(obj, "__module__", None)
    if isinstance(module, str):
        return module
    owner = getattr(obj, "__self__", None)
    if pyinspect.ismodule(owner):
        return str(owner.__name__)
    return type(obj).__module__
