"""Labelled query files for evaluation: CSV or JSONL with `query` and `faq_id`, or held-out YAML."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from retrieval.corpus import csv_records, jsonl_objects, open_text_file
from retrieval.errors import CorpusProblem, QueryFileError

# A file with thousands of bad rows names the first ones, not all of them.
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class LabelledQuery:
    """A query and the FAQ entry that answers it; faq_id None marks an out-of-scope query."""

    text: str
    faq_id: str | None
    line: int | None = None

    @property
    def in_scope(self) -> bool:
        """Whether some FAQ entry answers this query."""
        return self.faq_id is not None


def read_queries(path: Path | str, known_ids: Collection[str] | None = None
                 ) -> list[LabelledQuery]:
    """Load labelled queries; QueryFileError names the file, line and field of every problem.

    .csv and .jsonl rows have `query` and `faq_id` (other fields are ignored); an empty or null
    `faq_id` marks an out-of-scope query. .yaml / .yml is the held-out format of
    data/faq_eval.yaml: `paraphrases` ({text, id}) and `unrelated` (plain strings). With
    `known_ids`, a `faq_id` that is not one of them is a problem too.
    """
    path = Path(path)
    readers = {".csv": _read_csv, ".jsonl": _read_jsonl, ".yaml": _read_yaml, ".yml": _read_yaml}
    reader, text = open_text_file(path, "queries", readers, ".csv, .jsonl or .yaml",
                                  QueryFileError)
    problems: list[CorpusProblem] = []
    queries = reader(path, text, problems)
    if known_ids is not None:
        for query in queries:
            if query.faq_id is not None and query.faq_id not in known_ids:
                problems.append(CorpusProblem(
                    path, f"no FAQ entry has the id '{query.faq_id}'", query.line, "faq_id"))
    if not queries and not problems:
        problems.append(CorpusProblem(path, "no queries in file"))
    if problems:
        if len(problems) > MAX_PROBLEMS:
            more = len(problems) - MAX_PROBLEMS
            problems = [*problems[:MAX_PROBLEMS],
                        CorpusProblem(path, f"... and {more} more problems")]
        raise QueryFileError(problems)
    return queries


def _row(path: Path, data: dict[str, Any], line: int,
         problems: list[CorpusProblem]) -> LabelledQuery | None:
    """One row's query, or None after noting what is wrong with it."""
    before = len(problems)
    text = data.get("query")
    if not isinstance(text, str) or not text.strip():
        problems.append(CorpusProblem(path, "missing or empty query", line, "query"))
    if "faq_id" not in data:
        problems.append(CorpusProblem(
            path, "missing (leave it empty, or null, for an out-of-scope query)", line, "faq_id"))
    faq_id = data.get("faq_id")
    if faq_id is not None and (isinstance(faq_id, bool) or not isinstance(faq_id, str | int)):
        problems.append(CorpusProblem(
            path, f"must be an entry id or empty, not {faq_id!r}", line, "faq_id"))
    if len(problems) > before:
        return None
    assert isinstance(text, str)
    label = str(faq_id).strip() if faq_id is not None else ""
    return LabelledQuery(" ".join(text.split()), label or None, line)


def _read_csv(path: Path, text: str, problems: list[CorpusProblem]) -> list[LabelledQuery]:
    rows = (_row(path, record, line, problems)
            for line, record in csv_records(path, text, problems, ("query", "faq_id")))
    return [query for query in rows if query is not None]


def _read_jsonl(path: Path, text: str, problems: list[CorpusProblem]) -> list[LabelledQuery]:
    rows = (_row(path, item, number, problems)
            for number, item in jsonl_objects(path, text, problems))
    return [query for query in rows if query is not None]


def _read_yaml(path: Path, text: str, problems: list[CorpusProblem]) -> list[LabelledQuery]:
    try:
        doc = yaml.safe_load(text)
        lines = _item_lines(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problems.append(CorpusProblem(path, f"invalid YAML: {getattr(exc, 'problem', exc)}",
                                      mark.line + 1 if mark is not None else None))
        return []
    if not isinstance(doc, dict) or not isinstance(doc.get("paraphrases", []), list) \
            or not isinstance(doc.get("unrelated", []), list):
        problems.append(CorpusProblem(
            path, "expected a mapping with lists 'paraphrases' ({text, id}) and 'unrelated'"))
        return []
    queries = []
    for number, item in enumerate(doc.get("paraphrases") or []):
        line = lines.get(("paraphrases", number))
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) \
                or not item["text"].strip() or not item.get("id"):
            problems.append(CorpusProblem(path, "needs a text and an id", line,
                                          f"paraphrases[{number + 1}]"))
            continue
        queries.append(LabelledQuery(" ".join(item["text"].split()), str(item["id"]), line))
    for number, item in enumerate(doc.get("unrelated") or []):
        line = lines.get(("unrelated", number))
        if not isinstance(item, str) or not item.strip():
            problems.append(CorpusProblem(path, "must be a non-empty string", line,
                                          f"unrelated[{number + 1}]"))
            continue
        queries.append(LabelledQuery(" ".join(item.split()), None, line))
    return queries


def _item_lines(node: yaml.Node | None) -> dict[tuple[str, int], int]:
    """The line of each item of the top-level lists, keyed by (list name, position)."""
    lines: dict[tuple[str, int], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(value, yaml.SequenceNode):
                for i, item in enumerate(value.value):
                    lines[(str(key.value), i)] = item.start_mark.line + 1
    return lines
