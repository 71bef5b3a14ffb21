"""Examples: assistant-only loss on the real chat template, history cut, packing that keeps
examples apart inside the model (same logits packed as alone), deterministic sharded batches."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import torch

from training.errors import TrainingError
from training.examples import collate, count_tokens, make_rows, tokenize
from training.types import IGNORE, Conversation, Example, Row, Turn

pytestmark = pytest.mark.timeout(120)

SYSTEM = Turn("system", "You are the support assistant.")
Q1, A1 = Turn("user", "Where is my parcel?"), Turn("assistant", "Open My orders to track it.")
Q2, A2 = Turn("user", "And returns?"), Turn("assistant", "Within 30 days, for a full refund.")
Q3, A3 = Turn("user", "Thanks!"), Turn("assistant", "You are welcome.")
SHOWN = Turn("assistant", "Open My orders to track it.", train=False)  # context, not learnt


def conv(*turns: Turn, id: str = "c") -> Conversation:
    return Conversation(id, tuple(turns))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return loaded.eval()


def loss_spans(tokenizer: Any, example: Example) -> list[str]:
    """The label-unmasked tokens, decoded run by run."""
    spans: list[list[int]] = []
    for i, label in enumerate(example.labels):
        if label == IGNORE:
            continue
        assert label == example.input_ids[i]
        if i == 0 or example.labels[i - 1] == IGNORE:
            spans.append([])
        spans[-1].append(label)
    return [tokenizer.decode(span) for span in spans]


# (name, turns, assistant contents that carry loss, turns the rendering keeps)
MASKING_CASES = [
    ("one exchange", (Q1, A1), [A1], (Q1, A1)),
    ("with system", (SYSTEM, Q1, A1), [A1], (SYSTEM, Q1, A1)),
    ("multi-turn", (Q1, A1, Q2, A2, Q3, A3), [A1, A2, A3], (Q1, A1, Q2, A2, Q3, A3)),
    ("multi-turn with system", (SYSTEM, Q1, A1, Q2, A2), [A1, A2], (SYSTEM, Q1, A1, Q2, A2)),
    ("two replies in a row", (Q1, A1, A2), [A1, A2], (Q1, A1, A2)),
    ("two questions in a row", (Q1, Q2, A2), [A2], (Q1, Q2, A2)),
    ("greeting first is left out", (A3, Q1, A1), [A1], (Q1, A1)),
    ("trailing question is left out", (SYSTEM, Q1, A1, Q2), [A1], (SYSTEM, Q1, A1)),
    ("a context reply carries no loss", (SYSTEM, Q1, SHOWN, Q2, A2), [A2],
     (SYSTEM, Q1, SHOWN, Q2, A2)),
    ("a context reply last is left out", (Q1, A1, Q2, SHOWN), [A1], (Q1, A1)),
]


@pytest.mark.parametrize(("name", "turns", "trained", "kept"), MASKING_CASES,
                         ids=[c[0] for c in MASKING_CASES])
def test_loss_is_on_assistant_contents_and_end_token(
        tokenizer: Any, name: str, turns: tuple[Turn, ...], trained: list[Turn],
        kept: tuple[Turn, ...]) -> None:
    example = tokenize(tokenizer, conv(*turns, id=name), max_length=512)
    assert example is not None and example.conversation_id == name
    assert example.labels[0] == IGNORE
    assert loss_spans(tokenizer, example) == [t.content + "<|im_end|>" for t in trained]
    messages = [{"role": t.role, "content": t.content} for t in kept]
    assert tokenizer.decode(example.input_ids) == tokenizer.apply_chat_template(
        messages, tokenize=False)


@pytest.mark.parametrize("turns", [(), (SYSTEM,), (SYSTEM, Q1), (A1,), (A1, Q1), (Q1, SHOWN)])
def test_no_trainable_assistant_turn_gives_none(tokenizer: Any, turns: tuple[Turn, ...]) -> None:
    stats: dict[str, int] = {}
    assert tokenize(tokenizer, conv(*turns), max_length=512, stats=stats) is None
    assert stats == {"dropped_examples": 1}


def test_history_cut_keeps_the_system_and_the_latest_turns(tokenizer: Any) -> None:
    turns = (SYSTEM, Q1, A1, Q2, A2, Q3, A3)
    whole = tokenize(tokenizer, conv(*turns), max_length=512)
    last_two = tokenize(tokenizer, conv(SYSTEM, Q2, A2, Q3, A3), max_length=512)
    assert whole is not None and last_two is not None
    stats: dict[str, int] = {}
    cut = tokenize(tokenizer, conv(*turns), max_length=len(last_two), stats=stats)
    assert cut == last_two
    assert loss_spans(tokenizer, cut) == [A2.content + "<|im_end|>", A3.content + "<|im_end|>"]
    assert tokenizer.decode(cut.input_ids).startswith("<|im_start|>system\n" + SYSTEM.content)
    assert stats == {"history_cut_turns": 2, "history_cut_examples": 1}


def test_a_too_long_last_exchange_is_truncated_or_dropped(tokenizer: Any) -> None:
    prompt = tokenize(tokenizer, conv(SYSTEM, Q2, Turn("assistant", "")), max_length=512)
    assert prompt is not None  # the empty answer still trains its end token
    header = len(prompt) - 2  # without "<|im_end|>\n"
    long_answer = Turn("assistant", "Standard delivery takes 3-5 working days. " * 20)
    stats: dict[str, int] = {}
    example = tokenize(tokenizer, conv(SYSTEM, Q1, A1, Q2, long_answer), header + 5, stats)
    assert example is not None and len(example) == header + 5
    assert loss_spans(tokenizer, example) == [tokenizer.decode(example.input_ids[header:])]
    assert sum(label != IGNORE for label in example.labels) == 5
    assert stats == {"history_cut_turns": 2, "history_cut_examples": 1, "truncated_examples": 1}
    assert tokenize(tokenizer, conv(SYSTEM, Q2, long_answer), header, stats) is None
    assert stats["dropped_examples"] == 1


def test_a_template_that_rewrites_earlier_turns_is_refused(tokenizer: Any) -> None:
    odd = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    # Earlier assistant turns are rendered shorter than the last one (like "thinking" removal).
    odd.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' and not loop.last %}{{ m['content'][:5] }}"
        "{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(TrainingError, match=r"'odd', turn 1: .* rewrites earlier turns"):
        tokenize(odd, conv(Q1, A1, Q2, A2, id="odd"), max_length=512)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "turns", "trained", "kept"), MASKING_CASES[:4],
                         ids=[c[0] for c in MASKING_CASES[:4]])
def test_masking_on_the_real_smollm2_template(
        bundled_model_dir: Path, name: str, turns: tuple[Turn, ...], trained: list[Turn],
        kept: tuple[Turn, ...]) -> None:
    from transformers import AutoTokenizer

    smol = AutoTokenizer.from_pretrained(bundled_model_dir)
    example = tokenize(smol, conv(*turns), max_length=512)
    assert example is not None and example.labels[0] == IGNORE
    assert loss_spans(smol, example) == [t.content + "<|im_end|>" for t in trained]
    text = smol.decode(example.input_ids)
    # The template's default system prompt is context, never trained.
    assert ("You are a helpful AI assistant named SmolLM" in text) == (kept[0].role != "system")


@pytest.mark.slow
@pytest.mark.parametrize(("content", "trained"), [
    ("\nHello", ["\n", "Hello", "<|im_end|>"]),
    (" Hello", [" Hello", "<|im_end|>"]),
    ("\n\nHello", None),  # "\n\n" would swallow the header's "\n": no exact mask, dropped
    ("  two spaces", None),
])
def test_a_turn_boundary_inside_a_token_drops_the_example(
        bundled_model_dir: Path, content: str, trained: list[str] | None) -> None:
    from transformers import AutoTokenizer

    smol = AutoTokenizer.from_pretrained(bundled_model_dir)
    stats: dict[str, int] = {}
    example = tokenize(smol, conv(Q1, Turn("assistant", content)), 512, stats)
    if trained is None:
        assert example is None and stats == {"unstable_examples": 1, "dropped_examples": 1}
    else:
        assert example is not None and not stats
        assert [smol.decode([t]) for t in example.labels if t != IGNORE] == trained


def examples_of(tokenizer: Any, n: int) -> list[Example]:
    questions = [Q1, Q2, Q3, Turn("user", "Can I pay by card?")]
    answers = [A1, A2, A3, Turn("assistant", "Yes, all major cards.")]
    out = []
    for i in range(n):
        turns = [questions[i % 4], answers[i % 4]] + [Q2, A2] * (i % 3)
        example = tokenize(tokenizer, conv(*turns, id=f"c{i}"), max_length=512)
        assert example is not None
        out.append(example)
    return out


def segments(row: Row) -> list[tuple[int, int]]:
    """(start, end) of each example in a row, from the restarts of its position_ids."""
    starts = [i for i, p in enumerate(row.position_ids) if p == 0] + [len(row)]
    return list(pairwise(starts))


@pytest.mark.parametrize("max_length", [64, 150, 400])
def test_packing_keeps_every_example_once_within_max_length(tokenizer: Any,
                                                            max_length: int) -> None:
    examples = [e for e in examples_of(tokenizer, 30) if len(e) <= max_length]
    rows = make_rows(examples, max_length, pack=True, seed=1)
    assert all(len(row) <= max_length for row in rows)
    packed = Counter()
    for row in rows:
        assert len(row.labels) == len(row.position_ids) == len(row)
        for start, end in segments(row):
            assert row.position_ids[start:end] == list(range(end - start))
            assert row.labels[start] == IGNORE
            packed[(tuple(row.input_ids[start:end]), tuple(row.labels[start:end]))] += 1
    assert packed == Counter((tuple(e.input_ids), tuple(e.labels)) for e in examples)
    assert len(rows) < len(examples) or max_length < 2 * min(len(e) for e in examples)
    assert count_tokens(rows) == sum(label != IGNORE for e in examples for label in e.labels)


def test_without_packing_each_example_is_a_row_and_too_long_is_refused(tokenizer: Any) -> None:
    examples = examples_of(tokenizer, 5)
    rows = make_rows(examples, 512, pack=False)
    assert [r.input_ids for r in rows] == [e.input_ids for e in examples]
    assert all(r.position_ids == list(range(len(r))) for r in rows)
    with pytest.raises(TrainingError, match="more than max_length=10"):
        make_rows(examples, 10)


def test_collate_pads_right_as_a_segment_of_its_own() -> None:
    rows = [Row([5, 6, 7], [IGNORE, 6, 7], [0, 1, 2]), Row([8], [IGNORE], [0])]
    batch = collate(rows, pad_id=0)
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert all(t.dtype == torch.long for t in batch.values())
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, IGNORE, IGNORE]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]


def per_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The causal LM loss of every position (0 where the label is IGNORE), as the model shifts."""
    shifted = labels[1:]
    losses = torch.nn.functional.cross_entropy(logits[:-1], shifted, ignore_index=IGNORE,
                                               reduction="none")
    return losses


def test_packed_examples_see_only_themselves(tokenizer: Any, model: Any) -> None:
    """THE key property: an example's logits and losses inside a packed, padded row equal those
    of the example run alone, so nothing attends across example boundaries."""
    assert model.config._attn_implementation == "sdpa"
    examples = examples_of(tokenizer, 9)
    rows = make_rows(examples, 160, pack=True)
    assert any(len(segments(row)) > 1 for row in rows)
    batch = collate(rows, pad_id=tokenizer.pad_token_id)
    assert len({len(row) for row in rows}) > 1, "some row is padded"
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"},
                       use_cache=False).logits
        checked = 0
        for r, row in enumerate(rows):
            for start, end in segments(row):
                ids = torch.tensor([row.input_ids[start:end]])
                alone = model(input_ids=ids, use_cache=False).logits[0]
                torch.testing.assert_close(packed[r, start:end], alone, atol=1e-5, rtol=1e-5)
                labels = torch.tensor(row.labels[start:end])
                torch.testing.assert_close(per_token_loss(packed[r, start:end], labels),
                                           per_token_loss(alone, labels), atol=1e-5, rtol=1e-5)
                checked += 1
        assert checked == len(examples)
        # Control: with a plain causal mask the later examples of a row do see the earlier ones.
        first = next(r for r, row in enumerate(rows) if len(segments(row)) > 1)
        plain = model(input_ids=batch["input_ids"][first:first + 1],
                      position_ids=batch["position_ids"][first:first + 1],
                      attention_mask=torch.ones_like(batch["input_ids"][first:first + 1]),
                      use_cache=False).logits[0]
        start, end = segments(rows[first])[1]
        assert not torch.allclose(plain[start:end], packed[first, start:end], atol=1e-3)


def test_padding_does_not_change_the_loss(tokenizer: Any, model: Any) -> None:
    short, long = make_rows(examples_of(tokenizer, 3)[:2], 512, pack=False)
    assert len(short) < len(long)
    with torch.no_grad():
        alone = [model(**collate([row], 0), use_cache=False) for row in (short, long)]
        together = model(**collate([short, long], 0), use_cache=False)
    counts = [count_tokens([short]), count_tokens([long])]
    expected = sum(out.loss * n for out, n in zip(alone, counts, strict=True)) / sum(counts)
    torch.testing.assert_close(together.loss, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.logits[0, :len(short)], alone[0].logits[0],
                               atol=1e-5, rtol=1e-5)
