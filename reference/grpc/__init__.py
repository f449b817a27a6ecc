"""Generated protobuf code for the gRPC profile (PROTOCOL.md §8).

``snakepit.proto`` beside this file is the source; ``snakepit_pb2.py``,
``snakepit_pb2.pyi`` and ``snakepit_pb2_grpc.py`` are generated from it by
``tools/gen_protos.py`` (tox env ``protos``) and committed.  Never edit them
by hand: ``tests/test_grpc_protos.py`` fails when they drift from the proto.
The bridge itself is :mod:`snakepit_bridge.grpc_bridge`.
"""
