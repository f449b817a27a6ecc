"""Drive a gRPC bridge (PROTOCOL.md §8): start its command and read the ready line, or connect.

:class:`GrpcBridge` either spawns a bridge command (``--port 0`` appended
unless the command names a port) in its own process group, waits — bounded —
for the ``GRPC_SERVER_READY_ON_PORT=<port>`` line on its stdout, and connects to
127.0.0.1 on that port; or connects to ``--target HOST:PORT`` and leaves the
process alone.  Calls are unary or streaming, each with a client deadline.
Like :class:`~snakepit_harness.transports.stdio.StdioBridge` it drains stderr
all the time (a full pipe would hang the bridge), keeps the tail for error
reports, and kills the whole group on ``close()`` and at interpreter exit.

The harness builds its messages from the generated ``snakepit_pb2`` but
encodes and decodes the JSON values of the ``map<string, bytes>`` fields
itself (§8.3), independently of the reference bridge's code.  Client-side
deadlines that pass become :class:`BridgeTimeout`; a call that fails because
the process died becomes :class:`BridgeCrashed`; any other non-OK status is a
:class:`GrpcStatusError` carrying the status code name, for cases to judge.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

from ..errors import (
    BridgeCrashed,
    BridgeTimeout,
    HarnessError,
    LocalProtocolError,
    RemoteProtocolError,
)
from .process import (
    BridgeExit,
    StderrDrain,
    describe_returncode,
    kill_process_group,
    process_group_members,
    signal_process,
    track_until_exit,
    untrack,
    wait_for_exit,
)
from .stdio import STDERR_TAIL_BYTES

if TYPE_CHECKING:
    import grpc

    from snakepit_harness.protos import snakepit_pb2 as pb

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_STARTUP_TIMEOUT",
    "READY_PREFIX",
    "GrpcBridge",
    "GrpcStatusError",
    "GrpcStream",
    "ListeningSocket",
    "decode_map",
    "decode_value",
    "encode_args",
    "encode_value",
    "listening_sockets",
    "rpc_failure",
    "with_port_zero",
]

READY_PREFIX: Final = "GRPC_SERVER_READY_ON_PORT="
SERVICE: Final = "snakepit.SnakepitBridge"

# §8.2: the ready line MUST come within 10 s.
DEFAULT_STARTUP_TIMEOUT: Final = 10.0
DEFAULT_CALL_TIMEOUT: Final = 10.0

# The harness accepts messages up to this size both ways: far above the 16 MiB
# of §8.9, so the bridge's own limit is what a large-message case measures.
DEFAULT_MAX_MESSAGE_SIZE: Final = 256 * 1024 * 1024

# Stdout lines kept (a bridge that floods stdout must not grow our memory).
STDOUT_LINES_KEPT: Final = 200
_STDOUT_LINE_LIMIT: Final = 4096

# Reconnect quickly: a bridge that is not yet serving should become reachable
# as soon as it is, not after gRPC's default 1 s (then 1.6 s, ...) backoff.
_CHANNEL_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.enable_retries", 0),  # a case must see each failure, not a retried success
)

# A client deadline counts as ours (BridgeTimeout) when the call lasted at
# least this share of it; a DEADLINE_EXCEEDED that comes sooner is the bridge's.
_OWN_DEADLINE_SHARE: Final = 0.95


class GrpcStatusError(HarnessError):
    """A call ended with a non-OK gRPC status that is not our own deadline or a dead bridge."""

    def __init__(self, method: str, code: str, details: str, stderr_tail: bytes = b"") -> None:
        super().__init__(f"{method} failed with {code}: {details}")
        self.method = method
        self.code = code  # grpc.StatusCode name, e.g. "DEADLINE_EXCEEDED"
        self.details = details
        self.stderr_tail = stderr_tail


# -- values (§8.3), written from the spec, independent of the bridge's code ----


def encode_value(value: Any) -> bytes:
    """One map value: ``bytes`` go raw, anything else as strict UTF-8 JSON."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(f"cannot send {type(value).__name__} as JSON: {exc}") from None


def encode_args(args: Mapping[str, Any] | None) -> dict[str, bytes]:
    return {key: encode_value(value) for key, value in (args or {}).items()}


def _no_constants(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def decode_value(raw: bytes) -> Any:
    """A map value's JSON meaning, or the raw bytes when it is not UTF-8 JSON."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except ValueError:
        return bytes(raw)


def decode_map(entries: Mapping[str, bytes]) -> dict[str, Any]:
    return {key: decode_value(value) for key, value in entries.items()}


def rpc_failure(
    method: str,
    exc: grpc.RpcError,
    began: float,
    timeout: float,
    *,
    proc: subprocess.Popen[bytes] | None,
    stderr_tail: Callable[[], bytes],
) -> HarnessError:
    """What a failed call means: the process died, our deadline passed, or a status.

    ``proc`` is the server's process when the harness started it (None for a
    target): a call that failed because it died is :class:`BridgeCrashed`.
    """
    import grpc

    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else str(exc)) or ""
    if (
        proc is not None
        and proc.poll() is None
        and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    ):
        # Give a dying process a moment to be seen as dead.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)
    if proc is not None and proc.poll() is not None:
        return BridgeCrashed(
            f"{method}: the bridge is gone ({describe_returncode(proc.returncode)}); "
            f"{code.name}: {details}",
            stderr_tail(),
            proc.returncode,
        )
    elapsed = time.monotonic() - began
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and elapsed >= timeout * _OWN_DEADLINE_SHARE:
        return BridgeTimeout(f"{method}: no answer within {timeout:.1f} s", stderr_tail())
    return GrpcStatusError(method, code.name, details, stderr_tail())


# -- command lines -------------------------------------------------------------


def _option_value(argv: Sequence[str], name: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1 :]
    return None


def with_port_zero(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--port 0`` appended unless it already names a port."""
    argv = list(argv)
    if _option_value(argv, "--port") is None:
        argv += ["--port", "0"]
    return argv


def _connect_host(argv: Sequence[str]) -> str:
    """Where to reach a bridge started with ``argv``: its --host, loopback for wildcards."""
    host = _option_value(argv, "--host") or "127.0.0.1"
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


# -- /proc: which sockets a process group listens on ----------------------------


@dataclass(frozen=True)
class ListeningSocket:
    """A TCP socket in LISTEN state owned by the bridge's process group."""

    address: str  # "127.0.0.1", "0.0.0.0", "::1", "::"
    port: int

    @property
    def loopback_only(self) -> bool:
        return self.address.startswith("127.") or self.address in ("::1", "::ffff:127.0.0.1")


_TCP_LISTEN: Final = "0A"


def _decode_proc_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    # IPv6: four 32-bit words, each in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    import ipaddress

    address = ipaddress.IPv6Address(words)
    mapped = address.ipv4_mapped
    return f"::ffff:{mapped}" if mapped else str(address)


def listening_sockets(pids: Sequence[int]) -> list[ListeningSocket]:
    """TCP sockets in LISTEN state held open by any of ``pids`` (Linux /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            lines = Path(table).read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                if len(fields) < 10 or fields[3] != _TCP_LISTEN or fields[9] not in inodes:
                    continue
                address, port = fields[1].split(":")
                found.append(ListeningSocket(_decode_proc_address(address), int(port, 16)))
    return found


# -- the stdout reader ---------------------------------------------------------


class _StdoutLines(threading.Thread):
    """Read a bridge's stdout line by line; signal the first ready line."""

    def __init__(self, fd: int) -> None:
        super().__init__(name=f"grpc-stdout-{fd}", daemon=True)
        self._fd = fd
        self._lock = threading.Lock()
        self.lines: list[str] = []
        self.total_lines = 0
        self.ready = threading.Event()
        self.ready_line: str | None = None
        self.ready_at = 0.0

    def run(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                self._add(raw)
            if len(pending) > _STDOUT_LINE_LIMIT:
                self._add(pending)
                pending = b""
        if pending:
            self._add(pending)
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def _add(self, raw: bytes) -> None:
        line = raw[:_STDOUT_LINE_LIMIT].decode("utf-8", "replace").rstrip("\r")
        with self._lock:
            self.total_lines += 1
            if len(self.lines) < STDOUT_LINES_KEPT:
                self.lines.append(line)
            if self.ready_line is None and line.startswith(READY_PREFIX):
                self.ready_line = line
                self.ready_at = time.monotonic()
                self.ready.set()

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)


# -- streams -------------------------------------------------------------------


class GrpcStream:
    """An open server stream: iterate for messages, ``cancel()`` to stop it early."""

    def __init__(self, bridge: GrpcBridge, method: str, call: Any, timeout: float) -> None:
        self._bridge = bridge
        self._method = method
        self._call = call
        self._timeout = timeout
        self._began = time.monotonic()

    def __iter__(self) -> Iterator[pb.StreamResponse]:
        import grpc

        try:
            yield from self._call
        except grpc.RpcError as exc:
            raise self._bridge._call_error(self._method, exc, self._began, self._timeout) from None

    def cancel(self) -> None:
        self._call.cancel()

    def collect(self, limit: int = 100_000) -> list[pb.StreamResponse]:
        """Every message until the stream ends (at most ``limit``; then it is cancelled)."""
        messages = []
        for message in self:
            messages.append(message)
            if len(messages) >= limit:
                self.cancel()
                break
        return messages


# -- the bridge ----------------------------------------------------------------


class GrpcBridge:
    """A gRPC bridge: a process we started (``argv``) or a server at ``target``.

    Use as a context manager.  ``start()`` returns once the ready line came and
    the channel is connected; ``ready_probe`` records whether the very first
    call, made the moment the ready line arrived, reached a serving server
    (§8.2: the line must come only once the server is serving).
    """

    def __init__(
        self,
        argv: Sequence[str] | None = None,
        *,
        target: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        add_port: bool = True,
    ) -> None:
        if bool(argv) == bool(target):
            raise ValueError("give either a bridge command line or a target HOST:PORT")
        self.argv = (with_port_zero(argv) if add_port else list(argv)) if argv else []
        self.target = target
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self.startup_timeout = startup_timeout
        self.max_message_size = max_message_size
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout: _StdoutLines | None = None
        self._drain: StderrDrain | None = None
        self._channel: grpc.Channel | None = None
        self._methods: dict[str, Any] = {}
        self.address = target or ""
        self.port: int | None = None
        self.started_at = 0.0
        self.ready_elapsed: float | None = None  # seconds from spawn to the ready line
        self.ready_probe: str | None = None  # None: the first call got through; else what failed

    # -- life cycle ---------------------------------------------------------

    def start(self) -> Self:
        if self._channel is not None:
            raise RuntimeError("bridge already started")
        if self.argv:
            self._spawn()
            self._wait_ready()
        else:
            self.started_at = time.monotonic()
        self._open_channel()
        self._probe_and_connect()
        return self

    def __enter__(self) -> Self:
        if self._channel is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _spawn(self) -> None:
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env,
            cwd=self._cwd,
            start_new_session=True,
            bufsize=0,
        )
        self.started_at = time.monotonic()
        track_until_exit(self)
        assert self._proc.stdout and self._proc.stderr
        stdout_fd = os.dup(self._proc.stdout.fileno())
        stderr_fd = os.dup(self._proc.stderr.fileno())
        self._proc.stdout.close()
        self._proc.stderr.close()
        self._stdout = _StdoutLines(stdout_fd)
        self._stdout.start()
        self._drain = StderrDrain(stderr_fd, STDERR_TAIL_BYTES)
        self._drain.start()

    def _wait_ready(self) -> None:
        assert self._proc is not None and self._stdout is not None
        deadline = self.started_at + self.startup_timeout
        while not self._stdout.ready.wait(0.02):
            if self._proc.poll() is not None:
                self._stdout.join(timeout=1.0)
                if self._stdout.ready.is_set():
                    break
                raise BridgeCrashed(
                    f"the bridge ended before printing {READY_PREFIX}<port> "
                    f"({describe_returncode(self._proc.returncode)}); stdout: "
                    f"{self._stdout.snapshot()[-5:]}",
                    self.stderr_tail(),
                    self._proc.returncode,
                )
            if time.monotonic() >= deadline:
                tail = self.stderr_tail()
                self.kill()
                raise BridgeTimeout(
                    f"no {READY_PREFIX}<port> line on stdout within {self.startup_timeout:.1f} s "
                    f"(stdout so far: {self._stdout.snapshot()[-5:]})",
                    tail,
                )
        line = self._stdout.ready_line or ""
        self.ready_elapsed = self._stdout.ready_at - self.started_at
        value = line[len(READY_PREFIX) :].strip()
        if not value.isdigit() or not 0 < int(value) < 65536:
            self.kill()
            raise RemoteProtocolError(f"the ready line {line!r} does not name a TCP port")
        self.port = int(value)
        self.address = f"{_connect_host(self.argv)}:{self.port}"

    def _open_channel(self) -> None:
        import grpc

        options = [
            ("grpc.max_send_message_length", self.max_message_size),
            ("grpc.max_receive_message_length", self.max_message_size),
            *_CHANNEL_OPTIONS,
        ]
        self._channel = grpc.insecure_channel(self.address, options=options)

    def _probe_and_connect(self) -> None:
        """One call at once (wait_for_ready off), then wait for a connection if it failed."""
        import grpc

        from snakepit_harness.protos import snakepit_pb2

        probe = self._method(
            "Health", snakepit_pb2.HealthRequest, snakepit_pb2.HealthResponse, stream=False
        )
        try:
            probe(snakepit_pb2.HealthRequest(worker_id="harness-probe"), timeout=2.0)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self.ready_probe = (
                    f"{code.name}: {exc.details() if isinstance(exc, grpc.Call) else exc}"
                )
            # Any other status (UNIMPLEMENTED, ...) still came from a serving server.
        if self.ready_probe is None:
            return
        remaining = max(1.0, self.startup_timeout - (time.monotonic() - self.started_at))
        assert self._channel is not None
        try:
            grpc.channel_ready_future(self._channel).result(timeout=remaining)
        except grpc.FutureTimeoutError:
            tail = self.stderr_tail()
            self.kill()
            raise BridgeTimeout(
                f"could not connect to {self.address} within {remaining:.1f} s "
                f"(first call: {self.ready_probe})",
                tail,
            ) from None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("no bridge process (connected to a target, or not started)")
        return self._proc.pid

    @property
    def has_process(self) -> bool:
        return self._proc is not None

    def poll(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def wait_exit(self, timeout: float) -> BridgeExit | None:
        """Wait up to ``timeout`` seconds for the bridge process to end; None if it did not."""
        if self._proc is None:
            raise RuntimeError("no bridge process")
        return wait_for_exit(self._proc, timeout)

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the bridge process itself (not its group)."""
        if self._proc is not None:
            signal_process(self._proc, sig)

    def group_members(self) -> list[int]:
        """Pids in the bridge's process group (itself and any children), not zombies."""
        if self._proc is None:
            return []
        return process_group_members(self._proc.pid)

    def listening_sockets(self) -> list[ListeningSocket]:
        """TCP sockets the bridge's process group listens on (Linux /proc)."""
        return listening_sockets(self.group_members())

    def stdout_lines(self) -> list[str]:
        """Every line the bridge printed on stdout (the ready line included)."""
        return self._stdout.snapshot() if self._stdout is not None else []

    def stderr_tail(self) -> bytes:
        return self._drain.tail() if self._drain is not None else b""

    def kill(self) -> None:
        """SIGKILL the bridge's whole process group and reap it (no-op for a target)."""
        if self._proc is not None:
            kill_process_group(self._proc)

    def close(self) -> None:
        """Close the channel; kill the process group if we started one."""
        if self._channel is not None:
            self._channel.close()
        self.kill()
        for reader in (self._stdout, self._drain):
            if reader is not None:
                reader.join(timeout=1.0)
        untrack(self)

    # -- calls --------------------------------------------------------------

    def _method(self, name: str, request_type: Any, response_type: Any, *, stream: bool) -> Any:
        method = self._methods.get(name)
        if method is None:
            if self._channel is None:
                raise RuntimeError("bridge not started")
            factory = self._channel.unary_stream if stream else self._channel.unary_unary
            method = factory(
                f"/{SERVICE}/{name}",
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )
            self._methods[name] = method
        return method

    def _call_error(
        self, method: str, exc: grpc.RpcError, began: float, timeout: float
    ) -> HarnessError:
        return rpc_failure(
            method, exc, began, timeout, proc=self._proc, stderr_tail=self.stderr_tail
        )

    def _unary(self, name: str, request: Any, response_type: Any, timeout: float) -> Any:
        import grpc

        method = self._method(name, type(request), response_type, stream=False)
        began = time.monotonic()
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise self._call_error(name, exc, began, timeout) from None

    def _stream(self, name: str, request: Any, timeout: float) -> GrpcStream:
        from snakepit_harness.protos import snakepit_pb2

        method = self._method(name, type(request), snakepit_pb2.StreamResponse, stream=True)
        return GrpcStream(self, name, method(request, timeout=timeout), timeout)

    def execute_request(
        self, request: pb.ExecuteRequest, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> pb.ExecuteResponse:
        """Send a ready-made ``ExecuteRequest`` (args already encoded)."""
        from snakepit_harness.protos import snakepit_pb2

        response: pb.ExecuteResponse = self._unary(
            "Execute", request, snakepit_pb2.ExecuteResponse, timeout
        )
        return response

    def execute(
        self,
        command: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        request_id: str = "",
        timeout_ms: int = 0,
    ) -> pb.ExecuteResponse:
        """``Execute``: ``args`` values are JSON-encoded (``bytes`` sent raw)."""
        from snakepit_harness.protos import snakepit_pb2

        request = snakepit_pb2.ExecuteRequest(
            command=command, args=encode_args(args), timeout_ms=timeout_ms, request_id=request_id
        )
        return self.execute_request(request, timeout)

    def execute_in_session(
        self,
        session_id: str,
        command: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        request_id: str = "",
        timeout_ms: int = 0,
    ) -> pb.ExecuteResponse:
        from snakepit_harness.protos import snakepit_pb2

        request = snakepit_pb2.SessionRequest(
            session_id=session_id,
            command=command,
            args=encode_args(args),
            timeout_ms=timeout_ms,
            request_id=request_id,
        )
        response: pb.ExecuteResponse = self._unary(
            "ExecuteInSession", request, snakepit_pb2.ExecuteResponse, timeout
        )
        return response

    def execute_stream(
        self,
        command: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        request_id: str = "",
        timeout_ms: int = 0,
    ) -> GrpcStream:
        from snakepit_harness.protos import snakepit_pb2

        request = snakepit_pb2.ExecuteRequest(
            command=command, args=encode_args(args), timeout_ms=timeout_ms, request_id=request_id
        )
        return self._stream("ExecuteStream", request, timeout)

    def execute_in_session_stream(
        self,
        session_id: str,
        command: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        request_id: str = "",
        timeout_ms: int = 0,
    ) -> GrpcStream:
        from snakepit_harness.protos import snakepit_pb2

        request = snakepit_pb2.SessionRequest(
            session_id=session_id,
            command=command,
            args=encode_args(args),
            timeout_ms=timeout_ms,
            request_id=request_id,
        )
        return self._stream("ExecuteInSessionStream", request, timeout)

    def health(
        self, worker_id: str = "", *, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> pb.HealthResponse:
        from snakepit_harness.protos import snakepit_pb2

        response: pb.HealthResponse = self._unary(
            "Health",
            snakepit_pb2.HealthRequest(worker_id=worker_id),
            snakepit_pb2.HealthResponse,
            timeout,
        )
        return response

    def get_info(
        self,
        *,
        include_capabilities: bool = True,
        include_stats: bool = True,
        timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> pb.InfoResponse:
        from snakepit_harness.protos import snakepit_pb2

        response: pb.InfoResponse = self._unary(
            "GetInfo",
            snakepit_pb2.InfoRequest(
                include_capabilities=include_capabilities, include_stats=include_stats
            ),
            snakepit_pb2.InfoResponse,
            timeout,
        )
        return response

    def health_v1(self, service: str = "", *, timeout: float = DEFAULT_CALL_TIMEOUT) -> str:
        """The standard ``grpc.health.v1.Health/Check`` status name, e.g. ``"SERVING"``."""
        import grpc
        from grpc_health.v1 import health_pb2

        if self._channel is None:
            raise RuntimeError("bridge not started")
        check = self._channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        began = time.monotonic()
        try:
            reply = check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            raise self._call_error("grpc.health.v1.Health/Check", exc, began, timeout) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
