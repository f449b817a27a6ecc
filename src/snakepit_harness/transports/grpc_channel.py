"""A gRPC channel to a bridge, with deadlines and failures in the harness's terms.

Every gRPC transport (the ``grpc`` profile's ``SnakepitBridge``, the
``bridge-service`` profile's ``BridgeService``) talks through a
:class:`BridgeChannel`: it caches one callable per method, gives every call a
client deadline, and turns a failed call into the harness's error hierarchy:
a client deadline that passed is :class:`~snakepit_harness.errors.BridgeTimeout`,
a call that failed because the process died is
:class:`~snakepit_harness.errors.BridgeCrashed`, and any other non-OK status is
a :class:`GrpcStatusError` carrying the status code name, for cases to judge.
grpc is imported lazily: this module loads without the ``grpc`` extra.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from ..errors import BridgeCrashed, BridgeTimeout, HarnessError
from .process import describe_returncode

if TYPE_CHECKING:
    import grpc

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "BridgeChannel",
    "GrpcStatusError",
    "GrpcStream",
]

DEFAULT_CALL_TIMEOUT: Final = 10.0

# The harness accepts messages up to this size both ways: far above the 16 MiB
# of §8.9, so the bridge's own limit is what a large-message case measures.
DEFAULT_MAX_MESSAGE_SIZE: Final = 256 * 1024 * 1024

# Reconnect quickly: a bridge that is not yet serving should become reachable
# as soon as it is, not after gRPC's default 1 s (then 1.6 s, ...) backoff.
CHANNEL_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.enable_retries", 0),  # a case must see each failure, not a retried success
)

# A client deadline counts as ours (BridgeTimeout) when the call lasted at
# least this share of it; a DEADLINE_EXCEEDED that comes sooner is the bridge's.
_OWN_DEADLINE_SHARE: Final = 0.95

# How long a process whose call failed with UNAVAILABLE or CANCELLED gets to be
# seen as dead before the failure is judged a status rather than a crash.
_DYING_GRACE: Final = 0.2

M = TypeVar("M")


class GrpcStatusError(HarnessError):
    """A call ended with a non-OK gRPC status that is not our own deadline or a dead bridge."""

    def __init__(self, method: str, code: str, details: str, stderr_tail: bytes = b"") -> None:
        super().__init__(f"{method} failed with {code}: {details}")
        self.method = method
        self.code = code  # grpc.StatusCode name, e.g. "DEADLINE_EXCEEDED"
        self.details = details
        self.stderr_tail = stderr_tail


class GrpcStream(Generic[M]):
    """An open server stream: iterate for messages, ``cancel()`` to stop it early."""

    def __init__(self, channel: BridgeChannel, method: str, call: Any, timeout: float) -> None:
        self._channel = channel
        self._method = method
        self._call = call
        self._timeout = timeout
        self._began = time.monotonic()

    def __iter__(self) -> Iterator[M]:
        import grpc

        try:
            yield from self._call
        except grpc.RpcError as exc:
            raise self._channel.call_error(self._method, exc, self._began, self._timeout) from None

    def cancel(self) -> None:
        self._call.cancel()

    def collect(self, limit: int = 100_000) -> list[M]:
        """Every message until the stream ends (at most ``limit``; then it is cancelled)."""
        messages = []
        for message in self:
            messages.append(message)
            if len(messages) >= limit:
                self.cancel()
                break
        return messages


class BridgeChannel:
    """One insecure channel to ``address`` and the methods of ``service`` on it.

    ``process`` (when the harness started the server) and ``stderr_tail`` let
    a failed call be told apart: a dead process is a crash, not a status.
    """

    def __init__(
        self,
        address: str,
        service: str,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        process: subprocess.Popen[bytes] | None = None,
        stderr_tail: Callable[[], bytes] = bytes,
    ) -> None:
        import grpc

        self.address = address
        self.service = service
        self._process = process
        self._stderr_tail = stderr_tail
        options = [
            ("grpc.max_send_message_length", max_message_size),
            ("grpc.max_receive_message_length", max_message_size),
            *CHANNEL_OPTIONS,
        ]
        self.channel: grpc.Channel = grpc.insecure_channel(address, options=options)
        self._methods: dict[tuple[str, str], Any] = {}

    def method(
        self,
        name: str,
        request_type: Any,
        response_type: Any,
        *,
        stream: bool,
        service: str | None = None,
    ) -> Any:
        """The callable for ``/service/name``, built once (default service: the channel's)."""
        key = (service or self.service, name)
        method = self._methods.get(key)
        if method is None:
            factory = self.channel.unary_stream if stream else self.channel.unary_unary
            method = factory(
                f"/{key[0]}/{name}",
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )
            self._methods[key] = method
        return method

    def unary(
        self,
        name: str,
        request: Any,
        response_type: type[M],
        timeout: float,
        *,
        service: str | None = None,
    ) -> M:
        """Call ``name`` and return its reply; failures as the module docstring says."""
        import grpc

        method = self.method(name, type(request), response_type, stream=False, service=service)
        began = time.monotonic()
        try:
            reply: M = method(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise self.call_error(name, exc, began, timeout) from None
        return reply

    def stream(
        self, name: str, request: Any, response_type: type[M], timeout: float
    ) -> GrpcStream[M]:
        """Open the server stream ``name``."""
        method = self.method(name, type(request), response_type, stream=True)
        return GrpcStream(self, name, method(request, timeout=timeout), timeout)

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the channel is connected; False if it is not within ``timeout``."""
        import grpc

        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return False
        return True

    def call_error(
        self, method: str, exc: grpc.RpcError, began: float, timeout: float
    ) -> HarnessError:
        """What a failed call means: the bridge died, our deadline passed, or a status."""
        import grpc

        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = (exc.details() if isinstance(exc, grpc.Call) else str(exc)) or ""
        proc = self._process
        dying_codes = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        if proc is not None and proc.poll() is None and code in dying_codes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_DYING_GRACE)
        if proc is not None and proc.poll() is not None:
            return BridgeCrashed(
                f"{method}: the bridge is gone ({describe_returncode(proc.returncode)}); "
                f"{code.name}: {details}",
                self._stderr_tail(),
                proc.returncode,
            )
        elapsed = time.monotonic() - began
        if code is grpc.StatusCode.DEADLINE_EXCEEDED and elapsed >= timeout * _OWN_DEADLINE_SHARE:
            return BridgeTimeout(f"{method}: no answer within {timeout:.1f} s", self._stderr_tail())
        return GrpcStatusError(method, code.name, details, self._stderr_tail())

    def close(self) -> None:
        self.channel.close()
