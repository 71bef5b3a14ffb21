"""Clean conversations for training (PII, whitespace, empty, duplicate and long turns) and split
them into train and eval by conversation."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pydantic import ConfigDict, Field

from bot.shared.pii import Redactor, counts
from training.checked import CheckedConfig
from training.errors import ConfigError
from training.report import DataReport
from training.types import Conversation, Turn


class CleanConfig(CheckedConfig):
    """How conversations are cleaned; validated on creation (ConfigError names the setting)."""

    model_config = ConfigDict(frozen=True)

    max_turn_chars: int = Field(2000, ge=1, description="Longer turns are cut at the last word "
                                "boundary before this many characters.")
    redact_pii: bool = Field(True, description="Replace emails, phone numbers, card numbers and "
                             "IBANs with <EMAIL>, <PHONE>, <CARD>, <IBAN> before anything else.")


def truncate(text: str, limit: int) -> str:
    """The text cut to at most `limit` characters, at the last whitespace if there is one in
    the second half of the cut (else mid-word: a single long token)."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if not text[limit].isspace():
        boundary = max(cut.rfind(" "), cut.rfind("\n"), cut.rfind("\t"))
        if boundary > limit // 2:
            cut = cut[:boundary]
    return cut.rstrip()


def clean_turns(turns: Sequence[Turn], config: CleanConfig, report: DataReport,
                redactor: Redactor | None) -> tuple[Turn, ...]:
    """One conversation's turns: redacted, stripped, without empty or repeated turns, adjacent
    turns of one role merged (a chat template expects alternation), long turns cut."""
    kept: list[Turn] = []
    last_piece = ""  # the last turn added to kept[-1], to catch a repeat after a merge
    for turn in turns:
        content = turn.content
        if redactor is not None:
            content, spans = redactor.redact(content)
            report.add_redacted(counts(spans))
        content = content.strip()
        if not content:
            report.dropped_empty_turns += 1
            continue
        if kept and kept[-1].role == turn.role:
            if content == last_piece:  # sent twice in a row
                report.dropped_duplicate_turns += 1
                continue
            # One merged turn is learnt if either part was.
            kept[-1] = Turn(turn.role, f"{kept[-1].content}\n{content}",
                            kept[-1].train or turn.train)
            report.merged_turns += 1
        else:
            kept.append(Turn(turn.role, content, turn.train))
        last_piece = content
    out = []
    for turn in kept:
        short = truncate(turn.content, config.max_turn_chars)
        if short != turn.content:
            report.truncated_turns += 1
        out.append(Turn(turn.role, short, turn.train))
    return tuple(out)


def clean(conversations: Sequence[Conversation], config: CleanConfig,
          report: DataReport | None = None,
          redactor: Redactor | None = None) -> list[Conversation]:
    """Cleaned conversations, in input order; those without an assistant turn, and exact
    repeats of an earlier conversation (same turns), are dropped. Every step is counted."""
    report = report if report is not None else DataReport()
    if config.redact_pii and redactor is None:
        redactor = Redactor()
    seen: set[tuple[Turn, ...]] = set()
    out = []
    for conversation in conversations:
        turns = clean_turns(conversation.turns, config, report,
                            redactor if config.redact_pii else None)
        if not any(turn.role == "assistant" and turn.train for turn in turns):
            report.dropped_no_assistant += 1
            continue
        if turns in seen:
            report.dropped_duplicate_conversations += 1
            continue
        seen.add(turns)
        out.append(Conversation(conversation.id, turns, conversation.source,
                                conversation.group))
    return out


def split(conversations: Sequence[Conversation], eval_fraction: float, seed: int,
          report: DataReport | None = None) -> tuple[list[Conversation], list[Conversation]]:
    """(train, eval) by conversation (by group, where conversations share one: see
    Conversation.split_key): the keys are ordered by a hash of seed and key and the first
    round(n * eval_fraction) go to eval (at least one when eval_fraction > 0 and n >= 2, never
    all). The same seed and ids give the same split whatever the input order; input order is
    kept within each part."""
    if not 0 <= eval_fraction < 1:
        raise ConfigError(f"eval_fraction must be in [0, 1), not {eval_fraction}")
    ids = sorted({c.split_key for c in conversations},
                 key=lambda cid: hashlib.sha256(f"{seed}\0{cid}".encode()).digest())
    n_eval = round(len(ids) * eval_fraction)
    if eval_fraction > 0 and len(ids) >= 2:
        n_eval = min(max(n_eval, 1), len(ids) - 1)
    eval_ids = set(ids[:n_eval])
    train = [c for c in conversations if c.split_key not in eval_ids]
    held_out = [c for c in conversations if c.split_key in eval_ids]
    if report is not None:
        report.train_conversations, report.eval_conversations = len(train), len(held_out)
    return train, held_out
