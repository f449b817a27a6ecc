"""One point of a sweep: what a locust process is asked to run, and the JSON it writes back.

The harness and its locust processes share nothing but this: the harness
serialises a :class:`PointConfig` into the locust command line
(``--snakepit-config``, which locust's master also forwards to distributed
workers), and the locust process writes a result document (see
``locustfile.py``) to ``result_path``.  Stdlib only, so the harness can import
it without pulling in gevent or locust.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from typing import Final

__all__ = [
    "BASELINE_KIND",
    "BRIDGE_KIND",
    "GENERATOR_POLLS",
    "GENERATOR_SLEEPS",
    "GENERATOR_WAITS",
    "PointConfig",
    "baseline_command",
    "describe_point",
]

BRIDGE_KIND: Final = "bridge"
BASELINE_KIND: Final = "baseline"
# How a generator process waits for an answer while all its stdio workers are busy
# (PointConfig.generator_wait): poll the pipe first (.spin), or sleep at once.
GENERATOR_POLLS: Final = "poll"
GENERATOR_SLEEPS: Final = "sleep"
GENERATOR_WAITS: Final = (GENERATOR_POLLS, GENERATOR_SLEEPS)


BASELINE_MODULES: Final = {
    "stdio": "snakepit_harness.loadtests.raw_echo",
    "grpc": "snakepit_harness.loadtests.grpc_echo",
    "bridge-service": "snakepit_harness.loadtests.bridge_echo",
}


def baseline_command(transport: str, stream_chunks: int = 0) -> list[str]:
    """The calibration worker for ``transport``, run with this interpreter.

    ``stream_chunks``: how many messages the bridge-service echo streams back
    (the planned stream's own count).
    """
    command = [sys.executable, "-m", BASELINE_MODULES[transport]]
    if stream_chunks:
        command += ["--stream-chunks", str(stream_chunks)]
    return command


def describe_point(pool: int, codec: str, payload: str, host_delay_ms: float | None) -> str:
    """A point's coordinates as the report and the log name them ("pool=2 codec=json ...")."""
    where = f"pool={pool} codec={codec} payload={payload}"
    if host_delay_ms is not None:
        where += f" host-delay={host_delay_ms:g}ms"
    return where


@dataclass
class PointConfig:
    """Everything a locust process needs to run one point."""

    kind: str  # "bridge" or "baseline"
    transport: str  # "stdio", "grpc" or "bridge-service"
    bridge_cmd: list[str]
    pool: int
    codec: str  # json, msgpack, raw (baseline) or protobuf (gRPC)
    payload: str
    users: int
    warmup_s: float
    duration_s: float
    timeout_s: float = 30.0
    codec_select: str = "negotiate"
    result_path: str = ""
    pid_file: str = ""
    sample_interval_s: float = 0.0  # > 0: sample bridge memory (soak mode)
    stream_count: int = 10  # messages per gRPC ping_stream call
    expect_nodes: int = 1  # workers whose windows a locust master waits for
    last_point: bool = False  # distributed: workers stop after this point
    # Locust processes generating the load: this host's --processes share the
    # pool out among themselves (split_pool); distributed workers each run a
    # whole pool of their own.
    generator_processes: int = 1
    split_pool: bool = False
    generator_wait: str = GENERATOR_POLLS
    # bridge-service: the file holding the serialised ExecuteToolRequest
    # every call sends (written by the sweep for the point), the tool it
    # names, the host emulator the workers call back into (started by the
    # harness for the point) and the delay it adds to every callback (None
    # for the baseline, which makes no callbacks).
    tool_request_file: str = ""
    tool: str = ""
    host_address: str = ""
    host_delay_ms: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PointConfig:
        data = json.loads(text)
        return cls(**data)

    def pool_share(self, process_index: int) -> tuple[int, int]:
        """(workers, number of the first) of generator process ``process_index``'s pool.

        A pool shared out among processes gives each ``pool // processes``
        workers and one more to the first ``pool % processes``; a process
        whose share is 0 (more processes than workers) has nothing to drive.
        """
        if not self.split_pool:
            return self.pool, 0
        base, extra = divmod(self.pool, self.generator_processes)
        first = process_index * base + min(process_index, extra)
        return base + (1 if process_index < extra else 0), first

    @property
    def label(self) -> str:
        where = describe_point(self.pool, self.codec, self.payload, self.host_delay_ms)
        return f"{self.kind} {where}"
