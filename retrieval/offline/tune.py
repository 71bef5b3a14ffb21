"""Fine-tune the embedder on the FAQ's own phrasings (contrastive, in-batch negatives), so that
phrasings of one entry move together and apart from the other entries'.

The loss is sentence-transformers' MultipleNegativesRankingLoss over (phrasing, another phrasing
of the same entry) pairs; every batch holds pairs of distinct entries, so that no in-batch
"negative" is really a positive. A share of each entry's phrasings is held out of tuning, to
calibrate the answer and suggest thresholds on phrasings the tuned model has not seen
(retrieval.offline.calibrate).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retrieval.corpus import FaqEntry, corpus_hash
from retrieval.embedder import TUNING_FILE, resolve_embedder_path
from retrieval.errors import RetrievalError

StepCallback = Callable[[int, float], None]  # (step, loss) after every optimizer step


class TuneError(RetrievalError):
    """Tuning cannot start or finish: a bad setting, too little data, an unwritable folder."""


class TuneConfig(BaseModel):
    """The settings of one embedder tuning run; the tuning file records exactly `to_dict()`.

    Out-of-range values raise TuneError naming every bad field (pydantic checks the ranges).
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=3, ge=1, description=(
        "Passes over the phrasings (each phrasing is an anchor once per pass)."))
    batch_size: int = Field(default=32, ge=2, description=(
        "Pairs per step (at least 2: in-batch negatives); each batch holds distinct entries, "
        "so at most one per entry."))
    learning_rate: float = Field(default=3e-5, gt=0, lt=1,
                                 description="Peak AdamW learning rate, in (0, 1).")
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1, description=(
        "Share of the steps spent warming the learning rate up from 0, in [0, 1)."))
    holdout: float = Field(default=0.2, ge=0, le=0.5, description=(
        "Share of each entry's phrasings kept out of tuning to calibrate the thresholds "
        "(entries with fewer than 3 phrasings keep all of theirs), in [0, 0.5]."))
    with_answers: bool = Field(default=False, description=(
        "Also pair each phrasing with its entry's answer text (helps when entries have "
        "few phrasings and real answers)."))
    positives: int = Field(default=3, ge=1, description=(
        "Pairs per phrasing and epoch, each with another phrasing of its entry (fewer "
        "when the entry has fewer): small FAQs get more pairs out of few phrasings."))
    max_steps: int | None = Field(default=400, ge=1, description=(
        "Stop after this many steps even if the epochs are not done (about 1 s a step "
        "on 2 CPU cores at batch 32); None: all epochs."))
    seed: int = Field(default=0, description="Seeds the split, the pairs and the order.")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise TuneError("tuning settings: " + _problems(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        """The settings as the tuning file records them."""
        return self.model_dump()


def _problems(exc: ValidationError) -> str:
    """Each bad field and what is wrong with it, in the fields' order: "batch_size: ..."."""
    return "; ".join(f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                     for error in exc.errors())


@dataclass(frozen=True)
class Split:
    """Each entry's phrasings for tuning and the held-out ones (entry position, phrasing)."""

    tune: list[list[str]]
    held_out: list[tuple[int, str]]


def split_phrasings(entries: Sequence[FaqEntry], holdout: float, seed: int) -> Split:
    """Hold out round(holdout * n) phrasings (at least 1) of every entry with 3 or more."""
    rng = random.Random(seed)
    tune, held = [], []
    for position, entry in enumerate(entries):
        questions = list(entry.questions)
        rng.shuffle(questions)
        keep = len(questions)
        if holdout > 0 and len(questions) >= 3:
            keep -= max(1, round(holdout * len(questions)))
        tune.append(questions[:keep])
        held += [(position, q) for q in questions[keep:]]
    return Split(tune, held)


def epoch_batches(groups: Sequence[Sequence[str]], batch_size: int, rng: random.Random,
                  positives: int = 1) -> list[list[tuple[str, str]]]:
    """One pass: every text of every group as an anchor with up to `positives` other texts of
    its group, in batches whose pairs come from distinct groups (in-batch negatives are true
    negatives)."""
    by_group: list[list[tuple[str, str]]] = []
    for texts in groups:
        unique = list(dict.fromkeys(texts))
        pairs = [(anchor, p) for anchor in unique
                 for p in rng.sample([t for t in unique if t != anchor],
                                     min(positives, len(unique) - 1))]
        rng.shuffle(pairs)
        by_group.append(pairs)
    batches: list[list[tuple[str, str]]] = []
    while True:
        # The groups with the most pairs left go first, so that groups run out together and
        # few pairs are left over (a lone group's pairs cannot make a batch).
        order = sorted((g for g, pairs in enumerate(by_group) if pairs),
                       key=lambda g: (-len(by_group[g]), rng.random()))[:batch_size]
        if len(order) < 2:
            break
        batches.append([by_group[g].pop() for g in order])
    rng.shuffle(batches)
    return batches


@dataclass
class TuneResult:
    """What a tuning run did: the steps, their losses and where the model went."""

    out_dir: Path
    steps: int
    losses: list[float]
    seconds: float
    split: Split
    fingerprint: str


def tune_embedder(entries: Sequence[FaqEntry], base: str, out_dir: Path | str,
                  config: TuneConfig, on_step: StepCallback | None = None,
                  on_start: Callable[[int], None] | None = None) -> TuneResult:
    """Tune the sentence-transformers model `base` on the entries' phrasings; save it to out_dir.

    `on_start(total_steps)` is called once before the first step, `on_step(step, loss)` after
    every step.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from transformers import get_linear_schedule_with_warmup

    split = split_phrasings(entries, config.holdout, config.seed)
    groups = [texts + ([entry.answer] if config.with_answers else [])
              for texts, entry in zip(split.tune, entries, strict=True)]
    if sum(len(set(g)) >= 2 for g in groups) < 2:
        raise TuneError("tuning needs at least 2 entries with 2 or more phrasings each "
                        "(or --with-answers)")
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    model = SentenceTransformer(resolve_embedder_path(base), device="cpu")
    per_epoch = len(epoch_batches(groups, config.batch_size, random.Random(config.seed),
                                  config.positives))
    total = per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    loss_fn = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    schedule = get_linear_schedule_with_warmup(
        optimizer, math.ceil(config.warmup_ratio * total), total)
    if on_start is not None:
        on_start(total)
    started, history, step = time.perf_counter(), [], 0
    model.train()
    while step < total:
        for batch in epoch_batches(groups, config.batch_size, rng, config.positives):
            anchors = model.preprocess([a for a, _ in batch])
            positives = model.preprocess([p for _, p in batch])
            loss = loss_fn([anchors, positives], None)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            history.append(round(loss.item(), 5))
            if on_step is not None:
                on_step(step, history[-1])
            if step >= total:
                break
    model.eval()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save(str(out_dir))
    except OSError as exc:
        raise TuneError(f"cannot write the tuned embedder to {out_dir}: {exc}") from exc
    fingerprint = hashlib.sha256(json.dumps(
        [base, corpus_hash(entries), config.to_dict(), history, time.time()]).encode()
    ).hexdigest()[:16]
    return TuneResult(out_dir, step, history, time.perf_counter() - started, split, fingerprint)


def write_tuning_file(result: TuneResult, base: str, entries: Sequence[FaqEntry],
                      config: TuneConfig, extra: dict[str, Any]) -> Path:
    """The tuning record next to the model; its fingerprint names the embedder (index staleness)."""
    path = result.out_dir / TUNING_FILE
    record = {"fingerprint": result.fingerprint, "base": base,
              "corpus_hash": corpus_hash(entries), "entries": len(entries),
              "tuned_phrasings": sum(len(t) for t in result.split.tune),
              "held_out_phrasings": len(result.split.held_out), "config": config.to_dict(),
              "steps": result.steps, "seconds": round(result.seconds, 1),
              "losses": result.losses, **extra}
    try:
        path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise TuneError(f"cannot write {path}: {exc}") from exc
    return path
