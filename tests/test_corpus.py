"""FAQ loaders: the sample corpus, the three formats, and every kind of bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.corpus import FaqEntry, corpus_hash, load_faq
from retrieval.errors import CorpusError

YAML_GOOD = """\
company: Test
entries:
  - id: track
    questions:
      - How do I track my order?
      - where is my package
    answer: Use the tracking link.
    tags: [orders]
    link: https://x.example/track
  - id: returns
    questions: ["How do I return an item?"]
    answer: Within 30 days.
"""
JSONL_GOOD = "\n".join(json.dumps(row) for row in [
    {"id": "track", "questions": ["How do I track my order?", "where is my package"],
     "answer": "Use the tracking link.", "tags": ["orders"], "link": "https://x.example/track"},
    {"id": "returns", "questions": ["How do I return an item?"], "answer": "Within 30 days."},
]) + "\n"
CSV_GOOD = """\
id,questions,answer,tags,link
track,How do I track my order?|where is my package,Use the tracking link.,orders,https://x.example/track
returns,How do I return an item?,Within 30 days.,,
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_sample_faq_is_realistic(sample_entries: list[FaqEntry]) -> None:
    assert len(sample_entries) >= 40
    assert all(len(e.questions) >= 3 for e in sample_entries)
    assert all(e.answer and e.link for e in sample_entries)


@pytest.mark.parametrize(("name", "text"), [
    ("faq.yaml", YAML_GOOD), ("faq.jsonl", JSONL_GOOD), ("faq.csv", CSV_GOOD)])
def test_formats_load_the_same_entries(tmp_path: Path, name: str, text: str) -> None:
    entries = load_faq(write(tmp_path, name, text))
    assert entries == [
        FaqEntry("track", ("How do I track my order?", "where is my package"),
                 "Use the tracking link.", ("orders",), "https://x.example/track"),
        FaqEntry("returns", ("How do I return an item?",), "Within 30 days."),
    ]
    assert entries[0].question == "How do I track my order?"


def test_hash_depends_on_content_not_format(tmp_path: Path) -> None:
    from_yaml = corpus_hash(load_faq(write(tmp_path, "a.yaml", YAML_GOOD)))
    from_csv = corpus_hash(load_faq(write(tmp_path, "a.csv", CSV_GOOD)))
    changed = corpus_hash(load_faq(write(tmp_path, "b.yaml", YAML_GOOD.replace("30", "14"))))
    assert from_yaml == from_csv != changed


BAD = [
    # name, text, line, field, fragment of the message
    ("dup.yaml", YAML_GOOD.replace("id: returns", "id: track"), 10, "id",
     "duplicate id 'track' (first defined at line 3)"),
    ("empty-answer.yaml", YAML_GOOD.replace("Within 30 days.", "''"), 12, "answer",
     "missing or empty answer"),
    ("typo.yaml", YAML_GOOD.replace("    link:", "    lnk:"), 9, "lnk", "unknown field"),
    ("no-questions.yaml", YAML_GOOD.replace('questions: ["How do I return an item?"]',
                                            "questions: []"), 11, "questions",
     "at least one non-empty question"),
    ("syntax.yaml", YAML_GOOD.replace("[orders]", "[orders"), 9, None, "invalid YAML"),
    ("entries.yaml", "company: x\nentries: 3\n", 2, "entries", "expected a list of entries"),
    ("bad.jsonl", JSONL_GOOD + '{"id": "x", "answer": \n', 3, None, "invalid JSON"),
    ("list.jsonl", '["not", "an", "object"]\n', 1, None, "must be a JSON object"),
    ("wide.csv", CSV_GOOD + "x,q,a,t,l,extra\n", 4, None, "more fields than the header's 5"),
    ("narrow.csv", CSV_GOOD + "x,q\n", 4, None, "fewer fields than the header's 5"),
    ("header.csv", "id,question_text,answer\n1,q,a\n", 1, None,
     "header lacks column(s): questions"),
    ("empty.csv", CSV_GOOD.replace("Within 30 days.", ""), 3, "answer", "missing or empty answer"),
    ("empty.yaml", "", None, None, "no FAQ entries in file"),
    ("faq.txt", "hello", None, None, "unknown FAQ format '.txt'"),
]


@pytest.mark.parametrize(("name", "text", "line", "field", "fragment"), BAD,
                         ids=[row[0] for row in BAD])
def test_bad_files_name_file_line_and_field(tmp_path: Path, name: str, text: str,
                                            line: int | None, field: str | None,
                                            fragment: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(CorpusError) as caught:
        load_faq(path)
    error = caught.value
    assert fragment in str(error)
    assert str(path) in str(error)
    assert (error.line, error.field) == (line, field)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = YAML_GOOD.replace("Use the tracking link.", "''").replace("Within 30 days.", "''")
    with pytest.raises(CorpusError) as caught:
        load_faq(write(tmp_path, "two.yaml", text))
    assert [p.line for p in caught.value.problems] == [7, 12]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="FAQ file not found"):
        load_faq(tmp_path / "nope.yaml")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,questions,answer\n1,caf\xe9?,yes\n".encode("latin-1"))
    with pytest.raises(CorpusError, match="not UTF-8"):
        load_faq(path)


def test_csv_quoted_answer_keeps_its_line_break(tmp_path: Path) -> None:
    text = ('id,questions,answer\r\n'
            'hours,When are you open?,"Mon-Fri 9-17.\r\nSat 10-14."\r\n'
            'returns,How do I return an item?,Within 30 days.\r\n')
    entries = load_faq(write_bytes(tmp_path, "faq.csv", text.encode("utf-8")))
    assert entries[0].answer == "Mon-Fri 9-17.\nSat 10-14."
    assert entries[1].answer == "Within 30 days."


def test_csv_lines_stay_right_after_a_multiline_cell(tmp_path: Path) -> None:
    text = ('id,questions,answer\n'
            'hours,When are you open?,"Mon-Fri\n\nSat"\n'
            '\n'
            'returns,How do I return an item?,\n')
    with pytest.raises(CorpusError) as caught:
        load_faq(write(tmp_path, "faq.csv", text))
    assert (caught.value.line, caught.value.field) == (6, "answer")


@pytest.mark.parametrize(("name", "text"), [
    ("faq.yaml", YAML_GOOD), ("faq.jsonl", JSONL_GOOD), ("faq.csv", CSV_GOOD)])
def test_utf8_bom_is_accepted(tmp_path: Path, name: str, text: str) -> None:
    plain = load_faq(write(tmp_path, "plain-" + name, text))
    path = write_bytes(tmp_path, name, b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert load_faq(path) == plain


@pytest.mark.parametrize(("name", "text", "line"), [
    ("faq.yaml", YAML_GOOD.replace("Within 30 days.", "''"), 12),
    ("faq.jsonl", JSONL_GOOD + '{"id": "x"\n', 3),
    ("faq.csv", CSV_GOOD + "x,q\n", 4),
])
def test_bom_keeps_line_numbers(tmp_path: Path, name: str, text: str, line: int) -> None:
    path = write_bytes(tmp_path, name, b"\xef\xbb\xbf" + text.encode("utf-8"))
    with pytest.raises(CorpusError) as caught:
        load_faq(path)
    assert caught.value.line == line


def test_not_utf8_names_line_and_byte(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "faq.yaml", b"\xef\xbb\xbf" + YAML_GOOD.replace(
        "Within 30 days.", "Within 30 d\xe4ys.").encode("latin-1"))
    with pytest.raises(CorpusError) as caught:
        load_faq(path)
    offset = path.read_bytes().index(b"\xe4")
    assert caught.value.line == 12
    assert f"at byte {offset}" in str(caught.value)


def test_yaml_error_is_worded_as_before(tmp_path: Path) -> None:
    """libyaml parses; on an error the pure loader words it (and finds the same line)."""
    path = write(tmp_path, "faq.yaml", YAML_GOOD.replace("[orders]", "[orders"))
    with pytest.raises(CorpusError) as caught:
        load_faq(path)
    assert caught.value.line == 9
    assert "invalid YAML: expected ',' or ']', but got ':'" in str(caught.value)


def write_bytes(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path
