# mypy: disable-error-code="no-untyped-def"
"""The adapter script from docs/adapters.md, unchanged: run it with ``python my_script.py``."""

from snakepit_bridge import BaseCommandHandler, ProtocolHandler


class MyCustomHandler(BaseCommandHandler):
    def _register_commands(self):
        self.register_command("my_command", self.handle_my_command)

    def handle_my_command(self, args):
        return {"result": "processed", "input": args}


ProtocolHandler(MyCustomHandler()).run()
