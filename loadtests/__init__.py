"""Locust load tests for Snakepit bridges: pool sizing and codec choice, with numbers.

Harness side (no gevent, no locust): :mod:`.cli` (``snakepit-harness load``),
:mod:`.sweep` (one locust run per point), :mod:`.point` (what a run is asked
and answers), :mod:`.rows` / :mod:`.report` (typed rows, recommendation,
gates), :mod:`.render` (table, JSON, CSV), :mod:`.plots` (HTML with SVG).
Locust side: :mod:`.locustfile` (the users), :mod:`.node` (a point in one
locust process, alone or one of several), :mod:`.pool` / :mod:`.gpool` /
:mod:`.grpc_pool` (gevent pools), :mod:`.tally` (locust's statistics in bulk).
Both: :mod:`.profiles` (payloads, pre-encoded), :mod:`.hires` (nanosecond
records), :mod:`.grpc_calls` (pre-serialised gRPC requests), and the
calibration baselines :mod:`.raw_echo` / :mod:`.grpc_echo`.  Processes are
spawned and read through :mod:`snakepit_harness.transports.spawn`.  Nothing
here imports locust or gevent at package import time: the harness process
must stay unpatched.
"""
