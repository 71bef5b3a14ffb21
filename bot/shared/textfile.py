"""Reading users' text files: UTF-8 with or without a byte-order mark, errors with line numbers.

Every file a user hands supportbot (settings, FAQ, transcripts, labelled query or safety sets)
is read through here, so each says the same thing about the same mistake. Callers turn
`TextFileError` into their own error type, which adds the file's role ("FAQ file", ...).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class TextFileError(Exception):
    """A file that cannot be read as text; `line` is 1-based where the problem has one."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def read_bytes(path: Path, what: str = "file") -> bytes:
    """The file's bytes; TextFileError says the `what` ("FAQ file", ...) is not found or why it
    cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise TextFileError(f"{what} not found") from exc
    except OSError as exc:
        raise TextFileError(f"cannot read the {what}: {exc.strerror or exc}") from exc


def decode_text(raw: bytes) -> str:
    """UTF-8 text with or without a byte-order mark (Excel writes one), newlines as \\n.

    Universal newlines, as text mode reads them: a CSV cell's line break stays one \\n. A byte
    that is not UTF-8 is a TextFileError naming its line and offset.
    """
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        line = raw[:offset].count(b"\n") + 1
        raise TextFileError(f"not UTF-8 text ({exc.reason} at byte {offset}); "
                            "save the file as UTF-8", line) from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_text(path: Path) -> str:
    """`read_bytes` then `decode_text`."""
    return decode_text(read_bytes(path))


def jsonl_lines(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Each non-blank line of a JSON Lines text: (line number, the object), or (line number, a
    problem message) for a line that is not valid JSON or not a JSON object."""
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield number, f"invalid JSON: {exc.msg} (column {exc.colno})"
            continue
        if not isinstance(item, dict):
            yield number, "each line must be a JSON object"
            continue
        yield number, item
