"""Conversations -> token examples (chat template, assistant-only loss) -> packed rows -> tensors.

Masking: a token carries loss only if the assistant produced it at serving time, i.e. an
assistant message's content and the template's end-of-turn token (`<|im_end|>` for ChatML).
The header (`<|im_start|>assistant\\n`) is part of the prompt, and the whitespace a template
writes after the end-of-turn token (ChatML's `\\n`) is glue between turns that generation never
reaches (it stops at the end token), so both stay IGNORE. The spans come from rendering the
conversation's prefixes with the model's own template and diffing their token counts, checked
to be true prefixes: a template whose rendered prefixes are not prefixes raises `TrainingError`,
one conversation whose turn boundary falls inside a token is dropped (and counted), so the
loss is never silently put on the wrong tokens.

Rows: no attention_mask. Each example's position_ids restart at 0 (padding is one more such
segment), and transformers (`masking_utils.find_packed_sequence_indices`) then builds a
block-diagonal causal mask when the model is called with `attention_mask=None` and
`use_cache=False`, so packed examples never attend to each other.
"""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from collections.abc import Sequence
from typing import Any

import torch

from training.errors import TrainingError
from training.types import IGNORE, Conversation, Example, Row, Turn


def tokenize(tokenizer: Any, conversation: Conversation, max_length: int,
             stats: dict[str, int] | None = None) -> Example | None:
    """Render `conversation` with the tokenizer's chat template; loss on assistant tokens only.

    Too long: the oldest exchanges (a user turn with the replies after it) go first, the system
    message stays; if the last exchange alone is too long its tail is cut. Returns None when no
    assistant token would carry loss, or when an assistant turn's text starts with whitespace
    that the tokenizer merges with the header (no exact mask; cleaning strips such text).
    `stats` (if given) counts `history_cut_turns`, `history_cut_examples`,
    `truncated_examples`, `dropped_examples` and, of those, `unstable_examples`.
    """
    counts = stats if stats is not None else {}
    system, groups = _exchanges(conversation.turns)
    if not groups:
        _count(counts, "dropped_examples")
        return None
    cut = 0
    # Cheap length checks (one render each) first; the masking renders prefixes, so do it once.
    while len(groups) > 1 and len(_encode(tokenizer, system + _flat(groups))) > max_length:
        cut += len(groups.pop(0))
    encoded = _encode_masked(tokenizer, system + _flat(groups), conversation.id)
    if encoded is None:
        _count(counts, "unstable_examples")
        _count(counts, "dropped_examples")
        return None
    input_ids, labels = encoded
    if len(input_ids) > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
        _count(counts, "truncated_examples")
    if all(label == IGNORE for label in labels):
        _count(counts, "dropped_examples")
        return None
    if cut:
        _count(counts, "history_cut_turns", cut)
        _count(counts, "history_cut_examples")
    assert labels[0] == IGNORE, "an example's first token must carry no loss (packing boundary)"
    return Example(input_ids, labels, conversation.id)


def make_rows(examples: Sequence[Example], max_length: int, pack: bool = True,
              seed: int = 0) -> list[Row]:
    """Examples -> rows of at most `max_length` tokens: packed best-fit-decreasing, or one each.

    `seed` shuffles the examples before the (stable) sort, so that examples of equal length
    are not packed together in input order (e.g. all from one source file).
    """
    for example in examples:
        if len(example) > max_length:
            raise TrainingError(f"example {example.conversation_id!r} has {len(example)} tokens,"
                                f" more than max_length={max_length}; tokenize with the same"
                                " max_length")
    if not pack:
        return [_row([e]) for e in examples]
    order = list(examples)
    random.Random(seed).shuffle(order)
    order.sort(key=len, reverse=True)
    bins: list[list[Example]] = []
    free: list[tuple[int, int]] = []  # (tokens left, bin index), sorted: bisect finds best fit
    for example in order:
        at = bisect_left(free, (len(example), -1))
        if at == len(free):
            bins.append([example])
            insort(free, (max_length - len(example), len(bins) - 1))
            continue
        left, index = free.pop(at)
        bins[index].append(example)
        insort(free, (left - len(example), index))
    return [_row(b) for b in bins]


def collate(rows: Sequence[Row], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows -> long tensors `input_ids`, `labels`, `position_ids`, right-padded to the longest.

    Padding is a segment of its own (position_ids 0, 1, 2, ...; labels IGNORE). No
    attention_mask on purpose: call the model with `use_cache=False` and transformers derives
    the block-diagonal causal mask from position_ids.
    """
    width = max((len(row) for row in rows), default=0)
    input_ids, labels, position_ids = [], [], []
    for row in rows:
        pad = width - len(row)
        input_ids.append(row.input_ids + [pad_id] * pad)
        labels.append(row.labels + [IGNORE] * pad)
        position_ids.append(row.position_ids + list(range(pad)))
    return {"input_ids": torch.tensor(input_ids, dtype=torch.long).reshape(len(rows), width),
            "labels": torch.tensor(labels, dtype=torch.long).reshape(len(rows), width),
            "position_ids": torch.tensor(position_ids, dtype=torch.long).reshape(len(rows), width)}


def count_tokens(rows: Sequence[Row]) -> int:
    """The tokens that carry loss (for tokens/s and the data report)."""
    return sum(1 for row in rows for label in row.labels if label != IGNORE)


def _exchanges(turns: Sequence[Turn]) -> tuple[list[Turn], list[list[Turn]]]:
    """Leading system turns, and the rest as exchanges (a user turn + the turns up to the next).

    Assistant turns before the first user turn (a greeting) answer nothing and have no prompt
    to render a header from, so they are left out, as are turns after the last assistant
    turn to learn (`train=True`; they would carry no loss).
    """
    start = 0
    while start < len(turns) and turns[start].role == "system":
        start += 1
    rest = list(turns[start:])
    last = max((i for i, t in enumerate(rest) if t.role == "assistant" and t.train), default=-1)
    rest = rest[:last + 1]
    while rest and rest[0].role != "user":
        rest.pop(0)
    groups: list[list[Turn]] = []
    for turn in rest:
        if turn.role == "user" and (not groups or groups[-1][-1].role != "user"):
            groups.append([turn])
        else:
            groups[-1].append(turn)
    return list(turns[:start]), groups


def _flat(groups: list[list[Turn]]) -> list[Turn]:
    return [turn for group in groups for turn in group]


def _render(tokenizer: Any, turns: Sequence[Turn], generation_prompt: bool = False) -> str:
    messages = [{"role": t.role, "content": t.content} for t in turns]
    text = tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=generation_prompt)
    return str(text)


def _encode(tokenizer: Any, turns: Sequence[Turn], generation_prompt: bool = False) -> list[int]:
    """What apply_chat_template(tokenize=True) gives: the template writes any BOS itself."""
    text = _render(tokenizer, turns, generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _encode_masked(tokenizer: Any, turns: list[Turn],
                   conversation_id: str) -> tuple[list[int], list[int]] | None:
    """Token ids and labels: each assistant turn's span is the difference between the prefix
    ending in its header (generation prompt) and the prefix ending in the turn itself.

    None if a span boundary falls inside a token of the whole conversation (the turn's text
    starts with whitespace that merges with the header's): that one example cannot be masked
    exactly. A template whose rendered prefixes are not prefixes raises TrainingError.
    """
    text = _render(tokenizer, turns)
    input_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    labels = [IGNORE] * len(input_ids)
    special = set(tokenizer.all_special_ids)
    for i, turn in enumerate(turns):
        if turn.role != "assistant" or i == 0 or not turn.train:
            continue  # context (such as a worked example), not a reply to learn
        bounds = []
        for prefix, header in ((turns[:i], True), (turns[:i + 1], False)):
            rendered = _render(tokenizer, prefix, header)
            if not text.startswith(rendered):
                raise TrainingError(
                    f"conversation {conversation_id!r}, turn {i}: the chat template renders the"
                    f" conversation up to the assistant {'header' if header else 'end'} as text"
                    " that does not begin the whole conversation's text (it rewrites earlier"
                    " turns), so assistant tokens cannot be told apart; use a template whose"
                    " rendering of a prefix of the messages is a prefix of the rendering")
            ids = list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
            if input_ids[:len(ids)] != ids:
                return None
            bounds.append(len(ids))
        start, end = bounds
        # Template glue after the end-of-turn token (ChatML's "\n") is never generated.
        marks = [j for j in range(start, end) if input_ids[j] in special]
        if marks and not tokenizer.decode(input_ids[marks[-1] + 1:end]).strip():
            end = marks[-1] + 1
        labels[start:end] = input_ids[start:end]
    return input_ids, labels


def _row(examples: Sequence[Example]) -> Row:
    row = Row()
    for example in examples:
        row.input_ids += example.input_ids
        row.labels += example.labels
        row.position_ids += list(range(len(example)))
    return row


def _count(stats: dict[str, int], key: str, n: int = 1) -> None:
    stats[key] = stats.get(key, 0) + n
