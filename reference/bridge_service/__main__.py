"""``python -m snakepit_bridge.bridge_service``: the same as ``snakepit-bridge-worker``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
