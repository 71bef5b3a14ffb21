"""Errors raised by the training package; each carries the data a user needs to fix the cause."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


class TrainingInterrupted(Exception):
    """A stop signal ended the run early, after saving: not an error of the user's, so not a
    TrainingError. Carries what the CLI prints and the exit status it uses (128 + signal)."""

    def __init__(self, signal_name: str, step: int, total_steps: int, exit_status: int,
                 metrics: dict[str, Any]) -> None:
        self.signal_name, self.step, self.total_steps = signal_name, step, total_steps
        self.exit_status, self.metrics = exit_status, metrics
        super().__init__(f"stopped at step {step} of {total_steps} ({signal_name}): "
                         "checkpoint and partial adapter saved")
