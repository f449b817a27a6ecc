# mypy: disable-error-code="no-untyped-def"
"""The adapter from docs/adapters.md, unchanged, as an importable module.

Served by ``snakepit-generic-bridge-v2 --adapter my_module:MyCustomHandler``.
"""

from snakepit_bridge import BaseCommandHandler


class MyCustomHandler(BaseCommandHandler):
    def _register_commands(self):
        self.register_command("my_command", self.handle_my_command)

    def handle_my_command(self, args):
        return {"result": "processed", "input": args}
