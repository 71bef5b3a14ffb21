"""Read support conversations from files: messages JSONL, question/answer CSV, Taskmaster JSON.

Every reader yields records or bad records with a line number, so one policy (`on_error`) decides
for all formats whether a bad record stops the load or is counted in the report and skipped.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.shared.textfile import TextFileError, read_text
from training.errors import ConfigError, DataError
from training.report import DataReport
from training.types import Conversation, Role, Turn

FORMATS = ("messages", "csv", "taskmaster")
SUFFIXES = {".jsonl": "messages", ".csv": "csv", ".json": "taskmaster"}
ON_ERROR = ("skip", "fail")
ROLES: dict[str, Role] = {
    "system": "system", "user": "user", "customer": "user", "assistant": "assistant",
    "agent": "assistant", "operator": "assistant", "bot": "assistant"}
CSV_COLUMNS = (("question", "answer"), ("prompt", "response"), ("user", "assistant"))
FORMAT_HELP = ("formats: messages (.jsonl, one {\"messages\": [...]} per line), csv (.csv with "
               "question,answer columns), taskmaster (.json, a list of dialogues with utterances)")
_WHITESPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class _Record:
    line: int
    id: str
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class _Bad:
    line: int | None
    message: str
    field: str | None = None


class _Invalid(Exception):
    """A record's content is wrong: the reason, and the field it is in."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field


Reader = Callable[[Path, str], Iterator["_Record | _Bad"]]


def load_conversations(paths: Sequence[Path], fmt: str = "auto", on_error: str = "skip",
                       report: DataReport | None = None) -> list[Conversation]:
    """All conversations in `paths` (files, or folders of supported files, sorted by name).

    `fmt="auto"` tells the format of each file by extension and content. A bad record raises
    `DataError` with `on_error="fail"`; with `"skip"` it is listed in `report.skipped` as
    "file:line: reason" and the load goes on. A missing or non-UTF-8 file always raises.
    Ids are the records' own ids, else "<file stem>:<line>", made unique with a "#n" suffix.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise ConfigError(f"unknown data format {fmt!r}; use auto or one of {', '.join(FORMATS)}")
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be 'skip' or 'fail', not {on_error!r}")
    report = report if report is not None else DataReport()
    conversations: list[Conversation] = []
    seen: set[str] = set()
    for path in _expand(paths, fmt):
        text = _read_text(path)
        reader = READERS[fmt if fmt != "auto" else detect(path, text)]
        report.read_files += 1
        records = 0
        for item in reader(path, text):
            records += 1
            if isinstance(item, _Bad):
                if on_error == "fail":
                    raise DataError(path, item.message, line=item.line, field=item.field)
                where = f"{path}:{item.line}" if item.line is not None else str(path)
                what = f"field '{item.field}': " if item.field else ""
                report.skip(f"{where}: {what}{item.message}")
                continue
            cid = item.id
            if cid in seen:
                n = 2
                while f"{cid}#{n}" in seen:
                    n += 1
                cid = f"{cid}#{n}"
                report.renamed_duplicate_ids += 1
            seen.add(cid)
            conversations.append(Conversation(cid, item.turns, source=f"{path}:{item.line}"))
            report.read_conversations += 1
        if records == 0:
            if on_error == "fail":
                raise DataError(path, "no conversations in the file")
            report.skip(f"{path}: no conversations in the file")
    return conversations


def detect(path: Path, text: str) -> str:
    """The format of a file, by its extension and then its content; DataError if none fits."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".csv"):
        return SUFFIXES[suffix]
    if suffix == ".json" or text.lstrip().startswith("["):
        if _looks_taskmaster(text, suffix == ".json"):
            return "taskmaster"
    elif _looks_messages(text):
        return "messages"
    elif _csv_columns(next(csv.reader(io.StringIO(text, newline="")), [])) is not None:
        return "csv"
    raise DataError(path, f"cannot tell the format of this file; {FORMAT_HELP}; "
                          "or name the format explicitly")


def _expand(paths: Sequence[Path], fmt: str) -> list[Path]:
    """Files as given; a folder becomes its data files (of `fmt` if given), sorted by name. All
    are checked before any is read; a file named twice (itself and in its folder) is read once."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            suffixes = [s for s, f in SUFFIXES.items() if fmt in ("auto", f)]
            found = sorted(p for p in path.iterdir() if p.is_file()
                           and p.suffix.lower() in suffixes and not p.name.startswith("."))
            if not found:
                raise DataError(path, f"no data files (*{', *'.join(suffixes)}) in this folder")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise DataError(path, "no such file or folder")
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    return list(unique.values())


def _read_text(path: Path) -> str:
    """The file's text as UTF-8 (a byte-order mark is dropped); DataError if it is not."""
    try:
        return read_text(path)
    except TextFileError as exc:
        raise DataError(path, exc.message, line=exc.line) from exc


def _skip_ws(text: str, pos: int) -> int:
    """The position of the first non-whitespace character (JSON's whitespace) from `pos`."""
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def _kind(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    names = {dict: "an object", list: "a list", str: "a string", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _own_id(obj: dict[str, Any], key: str) -> str | None:
    """The record's own id (a string or a number), or None when it has none."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Invalid(f"expected a string or a number, got {_kind(value)}", key)
    return str(value)


def _role(item: dict[str, Any], key: str, where: str) -> Role:
    """The role named by item[key], with the aliases (customer, agent, ...) mapped."""
    if key not in item:
        raise _Invalid("missing", f"{where}.{key}")
    value = item[key]
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_kind(value)}", f"{where}.{key}")
    role = ROLES.get(value.strip().lower())
    if role is None:
        raise _Invalid(f"unknown role {value!r} (known: {', '.join(ROLES)})", f"{where}.{key}")
    return role


def _text(item: dict[str, Any], key: str, where: str) -> str:
    """A message's text: a string, null (as empty), or OpenAI-style parts of type text."""
    if key not in item:
        raise _Invalid("missing", f"{where}.{key}")
    value = item[key]
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        return "".join(str(p.get("text", "")) for p in value if p.get("type") == "text")
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_kind(value)}", f"{where}.{key}")
    return value


def _listing(obj: object, what: str, id_key: str, key: str) -> tuple[str | None, list[Any]]:
    """A record's own id and its non-empty list under `key` (messages, utterances)."""
    if not isinstance(obj, dict):
        raise _Invalid(f"expected {what}, got {_kind(obj)}")
    own = _own_id(obj, id_key)
    if key not in obj:
        raise _Invalid("missing", key)
    items = obj[key]
    if not isinstance(items, list) or not items:
        raise _Invalid(f"expected a non-empty list, got {_kind(items)}", key)
    return own, items


def _message(obj: object) -> tuple[str | None, tuple[Turn, ...]]:
    """The id and turns of one messages record."""
    own, messages = _listing(obj, "a JSON object", "id", "messages")
    turns = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _Invalid(f"expected an object, got {_kind(message)}", where)
        turns.append(Turn(_role(message, "role", where), _text(message, "content", where),
                          _weight(message, where)))
    return own, tuple(turns)


def _weight(message: dict[str, Any], where: str) -> bool:
    """OpenAI's fine-tuning `weight` (0 or 1, default 1): 0 keeps the turn as context only."""
    weight = message.get("weight", 1)
    if isinstance(weight, bool) or weight not in (0, 1):
        raise _Invalid(f"expected 0 or 1, got {weight!r}", f"{where}.weight")
    return weight == 1


def _read_messages(path: Path, text: str) -> Iterator[_Record | _Bad]:
    """JSONL, one {"messages": [{"role", "content"}, ...], "id"?} per line; blank lines skipped.
    (Split on newlines only: JSON strings may hold U+2028, which str.splitlines splits on.)"""
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield _Bad(number, f"invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        try:
            own, turns = _message(obj)
        except _Invalid as exc:
            yield _Bad(number, exc.message, exc.field)
            continue
        yield _Record(number, own or f"{path.stem}:{number}", turns)


def _csv_columns(header: list[str]) -> tuple[int, int, int | None] | None:
    """Indexes of the question and answer columns (and an optional id column), or None."""
    names = [h.strip().lower() for h in header]
    for question, answer in CSV_COLUMNS:
        if question in names and answer in names:
            id_column = names.index("id") if "id" in names else None
            return names.index(question), names.index(answer), id_column
    return None


def _read_csv(path: Path, text: str) -> Iterator[_Record | _Bad]:
    """A CSV with a header; each row one user question and one assistant answer."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = _csv_columns(header)
        if columns is None:
            yield _Bad(1, f"no question and answer columns in {header}; expected one of "
                          f"{', '.join('/'.join(pair) for pair in CSV_COLUMNS)} (any case)",
                       "header")
            return
        q, a, id_column = columns
        start = reader.line_num + 1
        for row in reader:
            number, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            missing = [i for i in (q, a) if i >= len(row) or not row[i].strip()]
            if missing:
                state = "missing" if missing[0] >= len(row) else "empty"
                yield _Bad(number, state, header[missing[0]].strip())
                continue
            own = row[id_column].strip() if id_column is not None and id_column < len(row) else ""
            yield _Record(number, own or f"{path.stem}:{number}",
                          (Turn("user", row[q]), Turn("assistant", row[a])))
    except csv.Error as exc:  # e.g. a NUL byte; the reader cannot go on past it
        yield _Bad(reader.line_num, f"unreadable CSV: {exc}; the rest of the file is skipped")


def _dialogue(obj: object) -> tuple[str | None, tuple[Turn, ...]]:
    """The id and turns of one Taskmaster dialogue; consecutive turns of one speaker merged."""
    own, utterances = _listing(obj, "an object", "conversation_id", "utterances")
    turns: list[Turn] = []
    for j, utterance in enumerate(utterances):
        where = f"utterances[{j}]"
        if not isinstance(utterance, dict):
            raise _Invalid(f"expected an object, got {_kind(utterance)}", where)
        role, text = _role(utterance, "speaker", where), _text(utterance, "text", where)
        if turns and turns[-1].role == role:
            if text.strip():
                turns[-1] = Turn(role, f"{turns[-1].content}\n{text}")
        else:
            turns.append(Turn(role, text))
    return own, tuple(turns)


def _looks_taskmaster(text: str, json_suffix: bool) -> bool:
    """A JSON list whose first item has utterances (or, for a .json file, unparsable: the
    taskmaster reader then reports where the JSON breaks)."""
    pos = _skip_ws(text, 0)
    if text[pos:pos + 1] != "[":
        return False
    pos = _skip_ws(text, pos + 1)
    if text[pos:pos + 1] == "]":
        return json_suffix
    try:
        first, _ = json.JSONDecoder().raw_decode(text, pos)
    except json.JSONDecodeError:
        return json_suffix
    return isinstance(first, dict) and "utterances" in first


def _looks_messages(text: str) -> bool:
    """The first non-blank line is a JSON object with messages."""
    first = next((line for line in text.split("\n") if line.strip()), "")
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(obj, dict) and "messages" in obj


def _read_taskmaster(path: Path, text: str) -> Iterator[_Record | _Bad]:
    """A JSON list of dialogues, decoded one dialogue at a time so each has its line number
    and the dialogues before a break in the JSON are kept."""
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos == len(text):
        return
    if text[pos] != "[":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield _Bad(exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})")
        else:
            yield _Bad(1, f"expected a JSON list of dialogues, got {_kind(value)}")
        return
    line, counted = 1, 0
    pos = _skip_ws(text, pos + 1)
    if text[pos:pos + 1] == "]":
        return
    for index in range(len(text)):
        line, counted = line + text.count("\n", counted, pos), pos
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield _Bad(exc.lineno, f"dialogue {index}: invalid JSON: {exc.msg} "
                                   f"(column {exc.colno}); the rest of the file is skipped")
            return
        try:
            own, turns = _dialogue(obj)
        except _Invalid as exc:
            yield _Bad(line, f"dialogue {index}: {exc.message}", exc.field)
        else:
            yield _Record(line, own or f"{path.stem}:{index}", turns)
        pos = _skip_ws(text, end)
        if text[pos:pos + 1] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if text[pos:pos + 1] != "]" or _skip_ws(text, pos + 1) != len(text):
            at = text.count("\n", 0, pos) + 1
            yield _Bad(at, f"invalid JSON after dialogue {index}: expected ',' or the end of "
                           "the list; the rest of the file is skipped")
        return


READERS: dict[str, Reader] = {
    "messages": _read_messages, "csv": _read_csv, "taskmaster": _read_taskmaster}
