"""Errors raised by the retrieval package; each carries the data a user needs to fix the cause."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class RetrievalError(Exception):
    """Base class for retrieval errors that a user can act on."""


@dataclass(frozen=True)
class CorpusProblem:
    """One thing wrong in a FAQ file, with where it is."""

    path: Path
    message: str
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = str(self.path) + (f", line {self.line}" if self.line is not None else "")
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}: {what}{self.message}"


class CorpusError(RetrievalError):
    """A FAQ file is missing, unreadable or malformed; lists every problem found."""

    def __init__(self, problems: list[CorpusProblem]) -> None:
        if not problems:
            raise ValueError("CorpusError needs at least one problem")
        self.problems = problems
        first = problems[0]
        self.path, self.line, self.field = first.path, first.line, first.field
        super().__init__("\n".join(str(p) for p in problems))

    @classmethod
    def single(cls, path: Path | str, message: str, line: int | None = None,
               field: str | None = None) -> CorpusError:
        """Build an error with one problem."""
        return cls([CorpusProblem(Path(path), message, line, field)])


class IndexStaleError(RetrievalError):
    """A saved index no longer matches the corpus or the embedder it is used with."""

    def __init__(self, index_dir: Path | str, reasons: list[str]) -> None:
        self.index_dir = Path(index_dir)
        self.reasons = reasons
        super().__init__(
            f"the index in {self.index_dir} is stale ({'; '.join(reasons)}); "
            "run 'supportbot index' to rebuild it"
        )


class IndexMissingError(RetrievalError):
    """No index has been built in the given folder yet."""

    def __init__(self, index_dir: Path | str) -> None:
        self.index_dir = Path(index_dir)
        super().__init__(f"no index in {self.index_dir}; run 'supportbot index' to build it")


class EmbedderError(RetrievalError):
    """The configured embedder cannot be found or loaded."""


class IndexWriteError(RetrievalError):
    """The index cannot be saved: a read-only or full disk, or a file where the folder should be."""

    def __init__(self, index_dir: Path | str, cause: Exception) -> None:
        self.index_dir = Path(index_dir)
        detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
        super().__init__(
            f"cannot save the index in {self.index_dir} ({detail}); set retrieval.index_dir "
            "to a folder you can write to"
        )


class QueryFileError(CorpusError):
    """A labelled queries file (for `eval retrieval`) is missing, unreadable or malformed."""


class ReportWriteError(RetrievalError):
    """An evaluation report cannot be written to the folder asked for."""

    def __init__(self, out_dir: Path | str, cause: OSError) -> None:
        self.out_dir = Path(out_dir)
        super().__init__(f"cannot write the report into {self.out_dir} "
                         f"({cause.strerror or cause})")


class ModelInstallError(RetrievalError):
    """An optional model cannot be downloaded, is incomplete, or a hash does not match."""
