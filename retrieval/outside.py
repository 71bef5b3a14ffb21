"""Out-of-scope questions: the classifier head's extra class, from a file or the bundled set."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from retrieval.errors import RetrievalError

# Bundled out-of-scope questions (CLINC150's oos_train; source and license in the file).
OOS_FILE = "oos_questions.txt"


def read_questions(path: Path | str | None = None) -> list[str]:
    """Out-of-scope questions, one per line (# comments); the bundled set without a path."""
    if path is None:
        text = resources.files("retrieval").joinpath(OOS_FILE).read_text(encoding="utf-8")
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RetrievalError(f"cannot read out-of-scope questions {path}: {exc}") from exc
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
