"""Errors raised by the training package; each carries the data a user needs to fix the cause."""

from __future__ import annotations

from pathlib import Path


class TrainingError(Exception):
    """Base class for training errors that a user can act on (the CLI prints them, no traceback)."""


class DataError(TrainingError):
    """An input file or one of its records is malformed: says which file, line and field."""

    def __init__(self, path: Path | str, message: str, line: int | None = None,
                 field: str | None = None) -> None:
        self.path, self.line, self.field, self.message = Path(path), line, field, message
        where = str(path) + (f", line {line}" if line is not None else "")
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")


class ConfigError(TrainingError):
    """A training setting is out of range or inconsistent; names the setting."""
