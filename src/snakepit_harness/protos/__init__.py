"""Generated protobuf code for the gRPC profiles (PROTOCOL.md §8 and §9).

The ``.proto`` files beside this module are the sources; the ``*_pb2.py``,
``*_pb2.pyi`` and ``*_pb2_grpc.py`` files are generated from them by
``tools/gen_protos.py`` (tox env ``protos``) and committed.  Never edit them
by hand: ``tests/test_grpc_protos.py`` fails when they drift from the protos.

This package belongs to the harness and is the one way to build protobuf
messages in the tree: the harness's transports, the load tests and the
reference gRPC bridges (``snakepit_bridge``) all import it, and it imports
nothing of theirs, so dependencies run one way.  It needs the ``grpc`` extra
(``pip install 'snakepit-harness[grpc]'``).
"""
