"""FAQ corpus: the FaqEntry record and loaders for YAML, JSONL and CSV files."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bot.shared.textfile import TextFileError, decode_text, jsonl_lines, read_bytes
from retrieval.errors import CorpusError, CorpusProblem

R = TypeVar("R")  # what a file's reader returns

FIELDS = ("id", "questions", "answer", "tags", "link")
LIST_SEPARATOR = "|"


@dataclass(frozen=True)
class FaqEntry:
    """One FAQ entry: an id, the phrasings customers use, the answer, and optional tags and link."""

    id: str
    questions: tuple[str, ...]
    answer: str
    tags: tuple[str, ...] = field(default_factory=tuple)
    link: str | None = None

    @property
    def question(self) -> str:
        """The canonical phrasing (the first one)."""
        return self.questions[0]


@dataclass(frozen=True)
class _RawRow:
    """A row as read from a file, before validation, with the line of the row and of each key."""

    data: dict[str, Any]
    line: int
    field_lines: dict[str, int]


def load_faq(path: Path | str) -> list[FaqEntry]:
    """Load and validate a FAQ file (.yaml, .yml, .jsonl, .csv); CorpusError names every problem."""
    path = Path(path)
    readers = {".yaml": _read_yaml, ".yml": _read_yaml, ".jsonl": _read_jsonl, ".csv": _read_csv}
    reader, text = open_text_file(path, "FAQ", readers, ".yaml, .jsonl or .csv", CorpusError)
    problems: list[CorpusProblem] = []
    rows = reader(path, text, problems)
    entries = _validate(path, rows, problems)
    if not entries and not problems:
        problems.append(CorpusProblem(path, "no FAQ entries in file"))
    if problems:
        raise CorpusError(problems)
    return entries


def open_text_file(path: Path, what: str, readers: Mapping[str, R], formats: str,
                   error: type[CorpusError]) -> tuple[R, str]:
    """The reader for the file's suffix and the file's text (UTF-8, BOM or not); `error` (a
    CorpusError type) says the `what` file is missing, of an unknown format, unreadable or not
    UTF-8, naming the line."""
    if not path.is_file():
        raise error.single(path, f"{what} file not found")
    suffix = path.suffix.lower()
    if suffix not in readers:
        raise error.single(path, f"unknown {what} format '{suffix}' (use {formats})")
    try:
        return readers[suffix], decode_text(read_bytes(path, f"{what} file"))
    except TextFileError as exc:
        raise error.single(path, exc.message, exc.line) from exc


def faq_file_hash(path: Path | str) -> str:
    """A hash of the FAQ file's bytes: equal bytes give equal entries, without parsing them."""
    try:
        return hashlib.sha256(read_bytes(Path(path), "FAQ file")).hexdigest()
    except TextFileError as exc:
        raise CorpusError.single(path, exc.message) from exc


def corpus_hash(entries: Iterable[FaqEntry]) -> str:
    """A content hash of the corpus: equal for equal entries, whatever format they came from."""
    payload = json.dumps([asdict(e) for e in entries], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --- readers: text -> raw rows with line numbers -------------------------------------------


_FastBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_FastBase):  # type: ignore[valid-type,misc]
    """A YAML loader (libyaml's where present) that keeps the line of every mapping and key."""


class _PureLineLoader(yaml.SafeLoader):
    """The pure-Python loader: used only to word an error, as libyaml words some less clearly."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    mapping["__lines__"] = {
        str(key_node.value): key_node.start_mark.line + 1 for key_node, _ in node.value
    }
    return mapping


for _loader in (_LineLoader, _PureLineLoader):
    _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class YamlSyntax(ValueError):
    """A text that is not YAML: the reason and the line (1-based) where it was found."""

    def __init__(self, reason: str, line: int | None) -> None:
        super().__init__(reason)
        self.reason, self.line = reason, line


def yaml_with_lines(text: str) -> Any:
    """The YAML document, every mapping with `__line__` (its own) and `__lines__` (its keys');
    YamlSyntax when it is not YAML, worded by the pure-Python loader where libyaml's is less
    clear. The FAQ, actions and dialogue-script files are read with it."""
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as fast_error:
        error = fast_error
        try:
            yaml.load(text, Loader=_PureLineLoader)
        except yaml.YAMLError as pure_error:
            error = pure_error
        mark = getattr(error, "problem_mark", None)
        reason = getattr(error, "problem", None) or str(error)
        raise YamlSyntax(reason, mark.line + 1 if mark is not None else None) from None


def _read_yaml(path: Path, text: str, problems: list[CorpusProblem]) -> list[_RawRow]:
    try:
        doc = yaml_with_lines(text)
    except YamlSyntax as bad:
        problems.append(CorpusProblem(path, f"invalid YAML: {bad.reason}", bad.line))
        return []
    if isinstance(doc, dict):
        items = doc.get("entries")
        if not isinstance(items, list):
            line = doc["__lines__"].get("entries", doc["__line__"])
            problems.append(CorpusProblem(path, "expected a list of entries", line, "entries"))
            return []
    elif isinstance(doc, list):
        items = doc
    elif doc is None:
        items = []
    else:
        problems.append(CorpusProblem(
            path, "expected a list of entries or a mapping with 'entries'"))
        return []
    rows = []
    for item in items:
        if not isinstance(item, dict):
            problems.append(CorpusProblem(path, f"an entry must be a mapping, got {item!r}"))
            continue
        line, lines = item.pop("__line__"), item.pop("__lines__")
        rows.append(_RawRow(_strip_lines(item), line, lines))
    return rows


def _strip_lines(value: Any) -> Any:
    """Remove the loader's line bookkeeping from nested values."""
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k not in ("__line__", "__lines__")}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


def jsonl_objects(path: Path, text: str, problems: list[CorpusProblem]
                  ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each non-blank line's JSON object with its line number; a line that is not valid JSON
    or not an object is noted in `problems` and skipped."""
    for number, item in jsonl_lines(text):
        if isinstance(item, str):
            problems.append(CorpusProblem(path, item, number))
        else:
            yield number, item


def csv_records(path: Path, text: str, problems: list[CorpusProblem],
                required: Iterable[str | tuple[str, ...]]) -> Iterator[tuple[int, dict[str, str]]]:
    """Each data row keyed by the (stripped) header, with the line it starts on; a header that
    lacks a required column (a tuple: any one of its names) is one problem and no rows; a row
    with more or fewer fields than the header is noted and skipped, as are blank lines."""
    # newline="": a quoted cell may hold a line break, which the csv module keeps.
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    missing = [names if isinstance(names, str) else names[0] for names in required
               if not set((names,) if isinstance(names, str) else names) & set(header)]
    if missing:
        problems.append(CorpusProblem(path, f"header lacks column(s): {', '.join(missing)}", 1))
        return
    while True:
        line = reader.line_num + 1  # where the next record starts (it may span lines)
        record = next(reader, None)
        if record is None:
            break
        if not record:  # a blank line
            continue
        if len(record) != len(header):
            more = "more" if len(record) > len(header) else "fewer"
            problems.append(CorpusProblem(
                path, f"row has {more} fields than the header's {len(header)}", line))
            continue
        yield line, dict(zip(header, record, strict=True))


def _read_jsonl(path: Path, text: str, problems: list[CorpusProblem]) -> list[_RawRow]:
    return [_RawRow(item, number, dict.fromkeys(item, number))
            for number, item in jsonl_objects(path, text, problems)]


def _read_csv(path: Path, text: str, problems: list[CorpusProblem]) -> list[_RawRow]:
    rows = []
    for line, record in csv_records(path, text, problems,
                                    ("id", ("questions", "question"), "answer")):
        item: dict[str, Any] = {k: v for k, v in record.items()
                                if v != "" or k in ("id", "answer")}
        for key in ("questions", "question", "tags"):
            if key in item:
                item[key] = [part.strip() for part in item[key].split(LIST_SEPARATOR)]
        rows.append(_RawRow(item, line, dict.fromkeys(item, line)))
    return rows


# --- validation: raw rows -> entries --------------------------------------------------------


def _validate(path: Path, rows: list[_RawRow], problems: list[CorpusProblem]) -> list[FaqEntry]:
    entries: list[FaqEntry] = []
    first_line: dict[str, int] = {}
    for row in rows:
        before = len(problems)
        entry = _entry(path, row, problems)
        if entry is None or len(problems) > before:
            continue
        if entry.id in first_line:
            problems.append(CorpusProblem(
                path, f"duplicate id '{entry.id}' (first defined at line {first_line[entry.id]})",
                row.field_lines.get("id", row.line), "id"))
            continue
        first_line[entry.id] = row.line
        entries.append(entry)
    return entries


def _entry(path: Path, row: _RawRow, problems: list[CorpusProblem]) -> FaqEntry | None:
    data = dict(row.data)
    if "question" in data and "questions" not in data:
        data["questions"] = data.pop("question")

    def problem(name: str, message: str) -> None:
        problems.append(CorpusProblem(path, message, row.field_lines.get(name, row.line), name))

    for name in data:
        if name not in FIELDS:
            problem(name, f"unknown field (expected one of: {', '.join(FIELDS)})")
    raw_id = data.get("id")
    entry_id = str(raw_id).strip() if isinstance(raw_id, (str, int)) else ""
    if not entry_id:
        problem("id", "missing or empty id")
    questions = list(_strings(data.get("questions")))
    if not questions or not all(questions):
        problem("questions", "needs at least one non-empty question")
    answer = data.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        problem("answer", "missing or empty answer")
    tags = data.get("tags", [])
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",")]
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        problem("tags", "tags must be a list of non-empty strings")
    link = data.get("link")
    if link is not None and not isinstance(link, str):
        problem("link", "link must be a string")
    if not entry_id or not questions or not isinstance(answer, str) or not isinstance(tags, list):
        return None
    return FaqEntry(
        id=entry_id,
        questions=tuple(q.strip() for q in questions),
        answer=answer.strip(),
        tags=tuple(str(t).strip() for t in tags),
        link=link.strip() if isinstance(link, str) and link.strip() else None,
    )


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value.strip()
    elif isinstance(value, list):
        for item in value:
            yield item.strip() if isinstance(item, str) else ""
