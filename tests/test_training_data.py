"""Training data: reading the three formats (good and bad records), PII redaction, cleaning,
the train/eval split and the report."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from bot.shared.pii import Redactor
from bot.shared.pii import counts as pii_counts
from training.clean import CleanConfig, clean, split, truncate
from training.errors import ConfigError, DataError
from training.formats import load_conversations
from training.report import DataReport
from training.types import Conversation, Turn

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "transcripts" / "taskmaster4_sample.json"


def msg(*pairs: tuple[str, str], **extra: object) -> str:
    """One messages-JSONL line."""
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in pairs], **extra})


def dialogue(cid: str, *pairs: tuple[str, str]) -> str:
    """One Taskmaster dialogue, compact JSON."""
    return json.dumps({"conversation_id": cid,
                       "utterances": [{"index": i, "speaker": s, "text": t}
                                      for i, (s, t) in enumerate(pairs)]})


GOOD_MSG = msg(("user", "hi"), ("assistant", "hello"))
GOOD_DLG = dialogue("d-good", ("user", "a latte"), ("assistant", "coming up"))


def write(tmp_path: Path, name: str, text: str, bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def taskmaster(*items: str) -> str:
    """A JSON list with one dialogue per line: item i is on line i + 2."""
    return "[\n" + ",\n".join(items) + "\n]\n"


# --- reading: good files ---------------------------------------------------------------------

def test_messages_jsonl_with_ids_roles_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "chats.jsonl", "\n".join([
        msg(("system", "Be brief."), ("customer", "hi"), ("agent", "hello"), id="c-1"),
        "",
        msg(("User", "where is my order?"), ("operator", "on its way"), ("bot", "anything else?")),
        msg(("user", "x"), ("assistant", "y"), id=7),
    ]) + "\n")
    report = DataReport()
    convs = load_conversations([path], report=report)
    assert [c.id for c in convs] == ["c-1", "chats:3", "7"]
    assert [t.role for t in convs[0].turns] == ["system", "user", "assistant"]
    assert [t.role for t in convs[1].turns] == ["user", "assistant", "assistant"]
    assert convs[1].source == f"{path}:3"
    assert (report.read_files, report.read_conversations, report.skipped) == (1, 3, [])


@pytest.mark.parametrize("header", ["question,answer", "Prompt,Response", "USER,ASSISTANT",
                                    "id, Question , answer"])
def test_csv_header_variants_and_line_numbers(tmp_path: Path, header: str) -> None:
    with_id = header.startswith("id")
    rows = ['"q1","a1"', '"q2\nstill q2","a2"', '', '"q3","a3"']
    if with_id:
        rows = [f"r{i},{row}" if row else row for i, row in enumerate(rows)]
    path = write(tmp_path, "faq.csv", header + "\n" + "\n".join(rows) + "\n")
    convs = load_conversations([path], fmt="csv")
    assert [c.turns for c in convs][1] == (Turn("user", "q2\nstill q2"), Turn("assistant", "a2"))
    expected = ["r0", "r1", "r3"] if with_id else ["faq:2", "faq:3", "faq:6"]
    assert [c.id for c in convs] == expected


def test_taskmaster_merges_consecutive_turns_of_one_speaker(tmp_path: Path) -> None:
    path = write(tmp_path, "tm.json", taskmaster(
        dialogue("d1", ("user", "one mocha"), ("user", "large"), ("assistant", "sure"),
                 ("USER", "thanks")),
        json.dumps({"utterances": [{"speaker": "user", "text": "hi"},
                                   {"speaker": "assistant", "text": "hey"}]})))
    convs = load_conversations([path])
    assert convs[0].turns == (Turn("user", "one mocha\nlarge"), Turn("assistant", "sure"),
                              Turn("user", "thanks"))
    assert [c.id for c in convs] == ["d1", "tm:1"]
    assert [c.source for c in convs] == [f"{path}:2", f"{path}:3"]


def test_taskmaster_sample_loads() -> None:
    report = DataReport()
    convs = load_conversations([SAMPLE], report=report)
    assert len(convs) == 40 and report.skipped == []
    assert len({c.id for c in convs}) == 40
    for conv in convs:
        roles = [t.role for t in conv.turns]
        assert roles[0] == "user"
        assert all(a != b for a, b in itertools.pairwise(roles)), conv.id


@pytest.mark.parametrize(("name", "text"), [
    ("a.jsonl", GOOD_MSG + "\n"),
    ("a.csv", "question,answer\nhi,hello\n"),
    ("a.json", taskmaster(GOOD_DLG)),
])
def test_utf8_bom_is_accepted(tmp_path: Path, name: str, text: str) -> None:
    convs = load_conversations([write(tmp_path, name, text, bom=True)], on_error="fail")
    assert len(convs) == 1 and convs[0].turns[0].role == "user"


# --- reading: format detection and inputs ----------------------------------------------------

@pytest.mark.parametrize(("name", "text", "fmt", "first_user"), [
    ("a.jsonl", GOOD_MSG, "auto", "hi"),
    ("a.csv", "question,answer\nwhy?,because\n", "auto", "why?"),
    ("a.json", taskmaster(GOOD_DLG), "auto", "a latte"),
    ("a.txt", GOOD_MSG, "auto", "hi"),                        # by content: messages
    ("a.txt", "Question,Answer\nwhy?,because\n", "auto", "why?"),  # by content: csv header
    ("a.data", taskmaster(GOOD_DLG), "auto", "a latte"),      # by content: list of dialogues
    ("a.txt", "question,answer\nwhy?,because\n", "csv", "why?"),   # named explicitly
])
def test_format_detection(tmp_path: Path, name: str, text: str, fmt: str,
                          first_user: str) -> None:
    convs = load_conversations([write(tmp_path, name, text)], fmt=fmt, on_error="fail")
    assert convs[0].turns[0] == Turn("user", first_user)


@pytest.mark.parametrize(("name", "text"), [
    ("a.json", '{"dialogues": []}'),
    ("a.json", '[{"messages": []}]'),
    ("notes.txt", "just some notes\n"),
])
def test_undetectable_file_names_file_and_formats(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(DataError) as err:
        load_conversations([path])  # even with on_error="skip"
    assert err.value.path == path
    assert all(f in str(err.value) for f in ("messages", "csv", "taskmaster"))


def test_folder_expands_to_its_data_files_sorted(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    write(folder, "b.csv", "question,answer\nq,a\n")
    write(folder, "a.jsonl", msg(("user", "x"), ("assistant", "y"), id="same"))
    write(folder, "c.json", taskmaster(dialogue("same", ("user", "u"), ("assistant", "v"))))
    write(folder, "README.md", "# not data\n")
    report = DataReport()
    convs = load_conversations([folder, folder / "b.csv"], report=report)  # b.csv read once
    assert [c.id for c in convs] == ["same", "b:2", "same#2"]  # duplicate id renamed
    assert (report.read_files, report.renamed_duplicate_ids) == (3, 1)


@pytest.mark.parametrize("on_error", ["skip", "fail"])
def test_missing_empty_folder_and_non_utf8_always_raise(tmp_path: Path, on_error: str) -> None:
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("question,answer\ncaf\xe9,ok\n".encode("latin-1"))
    for path, words, line in [(tmp_path / "nope.jsonl", "no such file", None),
                              (tmp_path / "empty", "no data files", None),
                              (bad, "not UTF-8", 2)]:
        with pytest.raises(DataError, match=words) as err:
            load_conversations([path], on_error=on_error)
        assert (err.value.path, err.value.line) == (path, line)


@pytest.mark.parametrize(("fmt", "on_error"), [("xml", "skip"), ("auto", "ignore")])
def test_bad_arguments(tmp_path: Path, fmt: str, on_error: str) -> None:
    with pytest.raises(ConfigError):
        load_conversations([write(tmp_path, "a.jsonl", GOOD_MSG)], fmt=fmt, on_error=on_error)


# --- reading: bad records --------------------------------------------------------------------

BAD_MSG = [  # (bad line, field, words in the message)
    ('{"messages": [', None, "invalid JSON"),
    ("[1, 2]", None, "expected a JSON object"),
    ('{"id": "x"}', "messages", "missing"),
    ('{"messages": "hi"}', "messages", "expected a non-empty list"),
    ('{"messages": []}', "messages", "expected a non-empty list"),
    ('{"messages": ["hi"]}', "messages[0]", "expected an object"),
    (msg(("user", "a"), ("assistant", "b"), ("tool", "c")), "messages[2].role", "unknown role"),
    ('{"messages": [{"content": "a"}]}', "messages[0].role", "missing"),
    ('{"messages": [{"role": 1, "content": "a"}]}', "messages[0].role", "expected a string"),
    ('{"messages": [{"role": "user"}]}', "messages[0].content", "missing"),
    ('{"messages": [{"role": "user", "content": 5}]}', "messages[0].content",
     "expected a string"),
    (msg(("user", "a"), id=[1]), "id", "expected a string or a number"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", '
     '"weight": 2}]}', "messages[1].weight", "expected 0 or 1"),
]
BAD_CSV = [
    ("only a question", "answer", "missing"),
    ('"a question",', "answer", "empty"),
    (',"an answer"', "question", "empty"),
]
BAD_DLG = [
    ('"just text"', None, "dialogue 1: expected an object"),
    ('{"conversation_id": "d"}', "utterances", "dialogue 1: missing"),
    ('{"utterances": {}}', "utterances", "dialogue 1: expected a non-empty list"),
    (dialogue("d", ("user", "a"), ("barista", "b")), "utterances[1].speaker",
     "dialogue 1: unknown role 'barista'"),
    ('{"utterances": [{"speaker": "user", "text": 3}]}', "utterances[0].text",
     "dialogue 1: expected a string"),
    ('{"conversation_id": 1.5, "utterances": []}', "conversation_id", "dialogue 1"),
]
BAD_CASES = (
    [("messages", *case) for case in BAD_MSG]
    + [("csv", *case) for case in BAD_CSV]
    + [("taskmaster", *case) for case in BAD_DLG])


def bad_file(tmp_path: Path, fmt: str, bad: str) -> tuple[Path, int]:
    """A file of `fmt` with a good record, the bad one, and another good one; the bad line."""
    if fmt == "messages":
        return write(tmp_path, "chats.jsonl", "\n".join([GOOD_MSG, bad, GOOD_MSG])), 2
    if fmt == "csv":
        return write(tmp_path, "faq.csv", "\n".join(["question,answer", "q,a", bad, "q2,a2"])), 3
    other = dialogue("d-other", ("user", "tea"), ("assistant", "ok"))
    return write(tmp_path, "tm.json", taskmaster(GOOD_DLG, bad, other)), 3


@pytest.mark.parametrize(("fmt", "bad", "field", "words"), BAD_CASES)
def test_bad_record_skipped_with_file_and_line(tmp_path: Path, fmt: str, bad: str,
                                               field: str | None, words: str) -> None:
    path, line = bad_file(tmp_path, fmt, bad)
    report = DataReport()
    convs = load_conversations([path], on_error="skip", report=report)
    assert len(convs) == 2  # the good records before and after the bad one are kept
    assert len(report.skipped) == 1 and report.read_conversations == 2
    entry = report.skipped[0]
    assert entry.startswith(f"{path}:{line}: ") and words in entry
    if field:
        assert f"field '{field}'" in entry


@pytest.mark.parametrize(("fmt", "bad", "field", "words"), BAD_CASES)
def test_bad_record_fails_with_file_line_and_field(tmp_path: Path, fmt: str, bad: str,
                                                   field: str | None, words: str) -> None:
    path, line = bad_file(tmp_path, fmt, bad)
    with pytest.raises(DataError) as err:
        load_conversations([path], on_error="fail")
    assert (err.value.path, err.value.line, err.value.field) == (path, line, field)
    assert words in err.value.message and str(path) in str(err.value)


@pytest.mark.parametrize(("name", "text", "line", "words", "kept"), [
    ("faq.csv", "prompt,reply\nq,a\n", 1, "no question and answer columns", 0),
    ("tm.json", taskmaster(GOOD_DLG, '{"utterances": [', GOOD_DLG), 3, "invalid JSON", 1),
    ("tm.json", "[\n" + GOOD_DLG + "\n" + GOOD_DLG + "\n]", 3, "expected ','", 1),
    ("tm.json", '{"a": 1}', 1, "expected a JSON list of dialogues", 0),
])
def test_unreadable_rest_of_file_keeps_what_came_before(tmp_path: Path, name: str, text: str,
                                                        line: int, words: str,
                                                        kept: int) -> None:
    path = write(tmp_path, name, text)
    report = DataReport()
    fmt = "taskmaster" if name.endswith(".json") else "auto"
    assert len(load_conversations([path], fmt=fmt, report=report)) == kept
    assert len(report.skipped) == 1
    assert report.skipped[0].startswith(f"{path}:{line}: ") and words in report.skipped[0]


@pytest.mark.parametrize(("name", "fmt"), [("a.jsonl", "auto"), ("a.csv", "auto"),
                                           ("a.json", "taskmaster"), ("b.jsonl", "messages")])
def test_empty_file_is_a_bad_file(tmp_path: Path, name: str, fmt: str) -> None:
    text = "question,answer\n" if name == "a.csv" else "\n \n"
    path = write(tmp_path, name, text)
    report = DataReport()
    assert load_conversations([path], fmt=fmt, report=report) == []
    assert report.skipped == [f"{path}: no conversations in the file"]
    with pytest.raises(DataError, match="no conversations"):
        load_conversations([path], fmt=fmt, on_error="fail")


# --- PII -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


@pytest.mark.parametrize(("text", "expected", "counts"), [
    ("write to anna.smith@example.co.uk please", "write to <EMAIL_ADDRESS> please",
     {"EMAIL_ADDRESS": 1}),
    ("a@b.com, j_doe+bank@firma.de", "<EMAIL_ADDRESS>, <EMAIL_ADDRESS>", {"EMAIL_ADDRESS": 2}),
    ("call me at (212) 555-0134", "call me at <PHONE_NUMBER>", {"PHONE_NUMBER": 1}),
    ("my number is 212-555-0134.", "my number is <PHONE_NUMBER>.", {"PHONE_NUMBER": 1}),
    ("+1 212 555 0134 or +44 20 7946 0958", "<PHONE_NUMBER> or <PHONE_NUMBER>",
     {"PHONE_NUMBER": 2}),
    ("ring 020 7946 0958 or +49 30 12345678", "ring <PHONE_NUMBER> or <PHONE_NUMBER>",
     {"PHONE_NUMBER": 2}),
    ("card 4111 1111 1111 1111 lost", "card <CREDIT_CARD> lost", {"CREDIT_CARD": 1}),
    ("card 4111-1111-1111-1111", "card <CREDIT_CARD>", {"CREDIT_CARD": 1}),
    ("amex 378282246310005", "amex <CREDIT_CARD>", {"CREDIT_CARD": 1}),
    ("mastercard 2221 0000 0000 0009", "mastercard <CREDIT_CARD>", {"CREDIT_CARD": 1}),  # 2-series
    # a mistyped card number (Luhn fails) in card groups still is one
    ("card 4111 1111 1111 1112", "card <CREDIT_CARD>", {"CREDIT_CARD": 1}),
    ("IBAN DE89 3704 0044 0532 0130 00 ok", "IBAN <IBAN_CODE> ok", {"IBAN_CODE": 1}),
    ("to GB82WEST12345698765432", "to <IBAN_CODE>", {"IBAN_CODE": 1}),
    ("mail a@b.com, call 212-555-0134, card 4111111111111111",
     "mail <EMAIL_ADDRESS>, call <PHONE_NUMBER>, card <CREDIT_CARD>",
     {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1, "CREDIT_CARD": 1}),
    # not PII: order numbers, short numbers, dates, prices
    ("order #12345 placed 2024-05-01 for $12.50", "order #12345 placed 2024-05-01 for $12.50", {}),
    ("my order number is 123456789", "my order number is 123456789", {}),
    ("order 1234567, pickup at 1695 Main St", "order 1234567, pickup at <ADDRESS>",
     {"ADDRESS": 1}),  # the order number stays; a street address is PII
    ("user@localhost", "user@localhost", {}),
    ("I want 2 lattes and 1 mocha", "I want 2 lattes and 1 mocha", {}),
])
def test_redaction(redactor: Redactor, text: str, expected: str, counts: dict[str, int]) -> None:
    redacted, spans = redactor.redact(text)
    assert (redacted, pii_counts(spans)) == (expected, Counter(counts))


def test_overlapping_matches_become_one_placeholder(redactor: Redactor) -> None:
    # this IBAN also holds a Luhn-valid card number and something phonenumbers takes for a phone
    text = "iban DE06 2527 8081 8501 1695 97."
    assert {s.label for s in redactor.find(text)} == {"IBAN_CODE"}
    redacted, spans = redactor.redact(text)
    assert (redacted, pii_counts(spans)) == ("iban <IBAN_CODE>.", Counter({"IBAN_CODE": 1}))


def test_redactor_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="SSN"):
        Redactor(entities=["EMAIL_ADDRESS", "SSN"])


# --- cleaning --------------------------------------------------------------------------------

def conv(cid: str, *turns: tuple[str, str]) -> Conversation:
    return Conversation(cid, tuple(Turn(r, c) for r, c in turns))  # type: ignore[arg-type]


NO_PII = CleanConfig(redact_pii=False)


@pytest.mark.parametrize(("turns", "expected", "counters"), [
    ([("user", "  hi \n"), ("assistant", "\thello ")], [("user", "hi"), ("assistant", "hello")],
     {}),
    ([("user", "hi"), ("assistant", "   "), ("assistant", "hello")],
     [("user", "hi"), ("assistant", "hello")], {"dropped_empty_turns": 1}),
    ([("user", "hi"), ("user", "hi "), ("assistant", "hello")],
     [("user", "hi"), ("assistant", "hello")], {"dropped_duplicate_turns": 1}),
    ([("user", "a"), ("assistant", ""), ("user", "b"), ("assistant", "ok")],
     [("user", "a\nb"), ("assistant", "ok")], {"dropped_empty_turns": 1, "merged_turns": 1}),
    ([("user", "a"), ("assistant", ""), ("user", "a"), ("assistant", "ok")],
     [("user", "a"), ("assistant", "ok")], {"dropped_empty_turns": 1,
                                            "dropped_duplicate_turns": 1}),
    ([("user", "a"), ("user", "b"), ("user", "b"), ("assistant", "ok")],
     [("user", "a\nb"), ("assistant", "ok")], {"merged_turns": 1, "dropped_duplicate_turns": 1}),
    ([("system", "Be brief."), ("user", "yes"), ("assistant", "more?"), ("user", "yes"),
      ("assistant", "done")],  # a repeat that is not adjacent is a real answer, kept
     [("system", "Be brief."), ("user", "yes"), ("assistant", "more?"), ("user", "yes"),
      ("assistant", "done")], {}),
    ([("user", "q"), ("assistant", "one two three four five six")],
     [("user", "q"), ("assistant", "one two three")], {"truncated_turns": 1}),
])
def test_clean_steps_are_counted(turns: list[tuple[str, str]],
                                 expected: list[tuple[str, str]],
                                 counters: dict[str, int]) -> None:
    report = DataReport()
    out = clean([conv("c", *turns)], CleanConfig(max_turn_chars=16, redact_pii=False), report)
    assert out == [conv("c", *expected)]
    names = ["dropped_empty_turns", "dropped_duplicate_turns", "merged_turns", "truncated_turns",
             "dropped_no_assistant", "dropped_duplicate_conversations"]
    assert {n: getattr(report, n) for n in names} == {n: counters.get(n, 0) for n in names}


def test_clean_drops_conversations_without_answer_and_exact_repeats() -> None:
    report = DataReport()
    convs = [conv("a", ("user", "hi"), ("assistant", "hello")),
             conv("b", ("user", "anyone there?"), ("assistant", " ")),
             conv("c", ("system", "s"), ("user", "q")),
             conv("d", ("user", " hi"), ("assistant", "hello ")),  # same as a once stripped
             conv("e", ("user", "hi"), ("assistant", "hello"), ("user", "thanks"))]
    assert [c.id for c in clean(convs, NO_PII, report)] == ["a", "e"]
    assert (report.dropped_no_assistant, report.dropped_duplicate_conversations) == (2, 1)


def test_clean_redacts_pii_first_and_counts_kinds() -> None:
    report = DataReport()
    out = clean([conv("a", ("user", "I'm ann@example.com, 212-555-0134"),
                      ("assistant", "Thanks! Card 4111 1111 1111 1111 is blocked."))],
                CleanConfig(), report)
    assert out[0].turns == (Turn("user", "I'm <EMAIL_ADDRESS>, <PHONE_NUMBER>"),
                            Turn("assistant", "Thanks! Card <CREDIT_CARD> is blocked."))
    assert report.redacted == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1, "CREDIT_CARD": 1}


@pytest.mark.parametrize(("text", "limit", "expected"), [
    ("short", 10, "short"),
    ("one two three", 7, "one two"),        # the limit falls on a space
    ("one two three", 9, "one two"),        # mid-word: back to the last space
    ("abcdefghijklmnop qr", 8, "abcdefgh"),  # no space in the second half: cut mid-word
])
def test_truncate_at_word_boundary(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit) == expected


@pytest.mark.parametrize("kwargs", [{"max_turn_chars": 0}, {"max_turn_chars": "100"},
                                    {"max_turn_chars": True}, {"redact_pii": "yes"}])
def test_clean_config_is_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        CleanConfig(**kwargs)  # type: ignore[arg-type]


# --- split -----------------------------------------------------------------------------------

CONVS = [conv(f"c{i}", ("user", f"q{i}"), ("assistant", f"a{i}"), ("user", "thanks"),
              ("assistant", "welcome")) for i in range(50)]


def test_split_by_conversation_without_leakage() -> None:
    report = DataReport()
    train, held_out = split(CONVS, 0.2, seed=1, report=report)
    assert len(held_out) == 10 and len(train) == 40
    assert {c.id for c in train}.isdisjoint(c.id for c in held_out)
    assert sorted(train + held_out, key=CONVS.index) == CONVS  # whole conversations, unchanged
    assert (report.train_conversations, report.eval_conversations) == (40, 10)


def test_split_is_stable_for_a_seed_and_changes_with_it() -> None:
    shuffled = CONVS[:]
    random.Random(0).shuffle(shuffled)
    ids = lambda part: {c.id for c in part}  # noqa: E731
    assert ids(split(CONVS, 0.2, seed=1)[1]) == ids(split(shuffled, 0.2, seed=1)[1])
    assert ids(split(CONVS, 0.2, seed=1)[1]) != ids(split(CONVS, 0.2, seed=2)[1])


@pytest.mark.parametrize(("n", "fraction", "n_eval"), [
    (2, 0.01, 1), (10, 0.0, 0), (1, 0.5, 0), (3, 0.9, 2), (0, 0.1, 0), (100, 0.1, 10)])
def test_split_sizes(n: int, fraction: float, n_eval: int) -> None:
    train, held_out = split(CONVS[:n] + [conv(f"x{i}", ("user", "q"), ("assistant", "a"))
                                         for i in range(max(0, n - 50))], fraction, seed=0)
    assert (len(train), len(held_out)) == (n - n_eval, n_eval)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_split_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ConfigError, match="eval_fraction"):
        split(CONVS, fraction, seed=0)


# --- report ----------------------------------------------------------------------------------

def test_report_json_and_table(tmp_path: Path) -> None:
    report = DataReport(read_files=2, read_conversations=5)
    report.skip("a.jsonl:3: invalid JSON [x]")
    report.add_redacted(Counter({"EMAIL": 2, "CARD": 0}))
    report.extra["train_tokens"] = 1234
    path = report.write(tmp_path / "out" / "data_report.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == report.as_dict()
    assert data["skipped"] == ["a.jsonl:3: invalid JSON [x]"] and data["redacted"] == {"EMAIL": 2}
    console = Console(record=True, width=100)
    console.print(report.table())
    shown = console.export_text()
    assert "skipped records" in shown and "a.jsonl:3: invalid JSON [x]" in shown
    assert "train tokens" in shown and "1234" in shown


def test_weight_zero_turns_are_context_and_survive_cleaning(tmp_path: Path) -> None:
    """OpenAI's `weight: 0`: the reply stays as context (train=False) through clean()."""
    path = tmp_path / "w.jsonl"
    path.write_text(json.dumps({"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "weight": 0},
        {"role": "user", "content": "refund?"}, {"role": "assistant", "content": "30 days",
                                                 "weight": 1}]}) + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "q"},
                                   {"role": "assistant", "content": "a", "weight": 0}]}) + "\n",
        encoding="utf-8")
    loaded = load_conversations([path], "messages", "fail")
    assert [t.train for t in loaded[0].turns] == [True, False, True, True]
    report = DataReport()
    cleaned = clean(loaded, NO_PII, report)
    assert [[t.train for t in c.turns] for c in cleaned] == [[True, False, True, True]]
    assert report.dropped_no_assistant == 1, "only context replies: nothing to learn"


def test_split_keeps_a_group_together() -> None:
    """Variants of one example (same group) never straddle the split."""
    grouped = [Conversation(f"g{i}#{v}", (Turn("user", f"q{i}"), Turn("assistant", f"a{i}{v}")),
                            group=f"g{i}") for i in range(30) for v in range(3)]
    train, held_out = split(grouped, 0.2, seed=3)
    assert len(held_out) == 18
    assert {c.group for c in train}.isdisjoint(c.group for c in held_out)
