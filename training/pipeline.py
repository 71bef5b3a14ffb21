"""From input files to a trained adapter: read, clean, split, tokenise, pack, train, report.

This is what `supportbot train` runs; each step is its own module (docs/training.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.shared.pii import Redactor
from training.clean import CleanConfig, clean, split
from training.config import TrainConfig
from training.errors import TrainingError
from training.examples import make_rows, tokenize
from training.formats import load_conversations
from training.report import DataReport
from training.types import Conversation, Example, Row, Turn


@dataclass
class Prepared:
    """The data of one run, ready for the loop."""

    train_rows: list[Row]
    eval_rows: list[Row]
    eval_conversations: list[Conversation]
    report: DataReport
    pad_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def prepare(inputs: Sequence[Path], base_model: Path, config: TrainConfig,
            fmt: str = "auto", on_error: str = "skip",
            clean_config: CleanConfig | None = None,
            extra_conversations: Sequence[Conversation] = (),
            system: str | None = None, redactor: Redactor | None = None) -> Prepared:
    """Read and clean every input, split by conversation, tokenise with the model's template.

    `system`: the system prompt given to conversations that have none, so the model learns
    under the prompt it is served with (without one, a template may put in its own default).
    `redactor`: the one the bot stores and exports with (its settings); default: the defaults.
    """
    from transformers import AutoTokenizer

    report = DataReport()
    conversations = load_conversations(list(inputs), fmt, on_error, report) if inputs else []
    if system:
        conversations = [c if c.turns and c.turns[0].role == "system" else
                         replace(c, turns=(Turn("system", system), *c.turns))
                         for c in conversations]
    conversations += list(extra_conversations)
    report.extra["grounded_conversations"] = len(extra_conversations)
    conversations = clean(conversations, clean_config or CleanConfig(), report, redactor)
    if not conversations:
        raise TrainingError("no conversation with an assistant turn is left to train on "
                            "(see the data report's skipped and dropped counts)")
    train_set, eval_set = split(conversations, config.eval_fraction, config.seed, report)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    stats: dict[str, int] = {}

    def examples(conversations: list[Conversation]) -> list[Example]:
        made = (tokenize(tokenizer, c, config.max_length, stats) for c in conversations)
        return [e for e in made if e is not None]

    train_examples, eval_examples = examples(train_set), examples(eval_set)
    if not train_examples:
        raise TrainingError("no training example is left after tokenising: every conversation "
                            f"was cut away at max_length={config.max_length}")
    train_rows = make_rows(train_examples, config.max_length, pack=config.pack, seed=config.seed)
    eval_rows = make_rows(eval_examples, config.max_length, pack=config.pack, seed=config.seed)
    report.extra.update(stats)
    report.extra.update({
        "train_examples": len(train_examples), "eval_examples": len(eval_examples),
        "train_rows": len(train_rows), "eval_rows": len(eval_rows),
        "train_tokens": sum(len(e) for e in train_examples),
        "train_loss_tokens": sum(sum(1 for x in e.labels if x != -100) for e in train_examples)})
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return Prepared(train_rows, eval_rows, eval_set, report, int(pad or 0))
