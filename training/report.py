"""The data report: what each step read, skipped, redacted, dropped and kept (JSON and a table)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

SHOWN_SKIPS = 10  # the table lists this many skipped records; the JSON keeps them all


@dataclass
class DataReport:
    """Counters filled in by the data steps; later steps (tokens, rows) add to `extra`."""

    read_files: int = 0
    read_conversations: int = 0
    renamed_duplicate_ids: int = 0
    skipped: list[str] = field(default_factory=list)  # "file:line: reason", in reading order
    redacted: dict[str, int] = field(default_factory=dict)  # kind ("EMAIL", ...) -> count
    dropped_empty_turns: int = 0
    dropped_duplicate_turns: int = 0
    merged_turns: int = 0
    truncated_turns: int = 0
    dropped_no_assistant: int = 0
    dropped_duplicate_conversations: int = 0
    train_conversations: int = 0
    eval_conversations: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def skip(self, entry: str) -> None:
        """Record one bad record that was left out."""
        self.skipped.append(entry)

    def add_redacted(self, counts: Mapping[str, int]) -> None:
        """Add redaction counts by kind."""
        for kind, n in counts.items():
            if n:
                self.redacted[kind] = self.redacted.get(kind, 0) + n

    def as_dict(self) -> dict[str, Any]:
        """Every counter, JSON-ready (`skipped` as the full list)."""
        return asdict(self)

    def write(self, path: Path) -> Path:
        """Write the report as JSON (UTF-8, indented); returns the path."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        return path

    def table(self) -> Table:
        """A two-column rich table: each counter, redactions by kind, the first skipped records."""
        table = Table(title="Training data", show_header=True)
        table.add_column("step")
        table.add_column("count", justify="right")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "skipped":
                table.add_row("skipped records", str(len(value)))
            elif f.name == "redacted":
                table.add_row("redacted", str(sum(value.values())))
                for kind, n in sorted(value.items()):
                    table.add_row(f"  {kind}", str(n))
            elif f.name == "extra":
                for key, extra in value.items():
                    table.add_row(key.replace("_", " "), str(extra))
            else:
                table.add_row(f.name.replace("_", " "), str(value))
        for entry in self.skipped[:SHOWN_SKIPS]:
            table.add_row(f"[dim]{escape(entry)}[/dim]", "")
        if len(self.skipped) > SHOWN_SKIPS:
            table.add_row(f"[dim]... {len(self.skipped) - SHOWN_SKIPS} more skipped[/dim]", "")
        return table
