"""The error every config problem becomes: ConfigError, one "FILE:LINE: path: message" each.

Its own module so that the section models (edge.config.mqtt reads password files) and the
loader (edge.config.load, which imports the models) can both raise it without importing each
other.
"""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration cannot be used; .messages holds one "FILE:LINE: path: message" each."""

    def __init__(self, messages: list[str] | str) -> None:
        """Keep the messages; str(error) joins them with newlines."""
        given = [messages] if isinstance(messages, str) else list(messages)
        # One line per problem, whatever odd key names the file holds.
        self.messages: list[str] = [m.replace("\r", "\\r").replace("\n", "\\n") for m in given]
        super().__init__("\n".join(self.messages))
