"""Locust load tests for Snakepit bridges: pool sizing and codec choice, with numbers.

Modules: :mod:`.profiles` (payloads, pre-encoded), :mod:`.hires` (microsecond
records), :mod:`.raw_echo` / :mod:`.grpc_echo` (calibration baselines),
:mod:`.gpool` / :mod:`.grpc_pool` (gevent pools, locust side only),
:mod:`.locustfile` (the users), :mod:`.sweep` (one locust process per point),
:mod:`.report` (table, plots, recommendation, gates) and :mod:`.cli`
(``snakepit-harness load``).  Nothing here imports locust or gevent at package
import time: the harness process must stay unpatched.
"""
