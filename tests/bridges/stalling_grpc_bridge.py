#!/usr/bin/env python3
"""A gRPC bridge whose every STALL_EVERY-th stream hangs: the soak's stall detector must see it."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator
from typing import Any, Final

from snakepit_bridge.grpc_bridge import BridgeServicer, main

STALL_EVERY: Final = 25
# Longer than any deadline the soak's test gives a call.
STALL_SECONDS: Final = 3.0


class StallingStreams(BridgeServicer):
    _streams = itertools.count(1)

    def _stream(self, request: Any, context: Any, session_id: str | None) -> Iterator[Any]:
        if next(self._streams) % STALL_EVERY == 0:
            time.sleep(STALL_SECONDS)  # DEFECT: this stream sends nothing for a while
        yield from super()._stream(request, context, session_id)


if __name__ == "__main__":
    sys.exit(main(servicer_class=StallingStreams))
