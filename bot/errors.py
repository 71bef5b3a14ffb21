"""The exception tree of the bot runtime; the CLI shows these as messages, never as tracebacks."""

from __future__ import annotations

from pathlib import Path


class SupportbotError(Exception):
    """Base class for errors a user can act on."""


class SettingsError(SupportbotError):
    """The settings file or environment holds a bad value; lists every problem with its source."""

    def __init__(self, problems: list[str], path: Path | None = None) -> None:
        self.problems = problems
        self.path = path
        where = f" in {path}" if path else ""
        super().__init__(f"invalid settings{where}:\n" + "\n".join(f"  {p}" for p in problems))


class StorageError(SupportbotError):
    """The conversation database cannot be opened or written."""


class ConversationBusyError(StorageError):
    """A turn waited too long (storage.turn_lock_seconds) for the conversation's previous turn;
    the customer is asked to try again."""


class InputError(SupportbotError):
    """A user message cannot be handled as given (empty, too long)."""


class ModelError(SupportbotError):
    """The generator model or its adapter cannot be found or loaded."""


class GenerationError(SupportbotError):
    """A reply cannot be generated as configured (for example, the prompt cannot fit)."""


class SettingsWarning(UserWarning):
    """A setting is probably not what the user meant (say, a misspelt SUPPORTBOT_* variable)."""


class ChannelError(SupportbotError):
    """A channel cannot start: bad credentials, or its service cannot be reached."""
