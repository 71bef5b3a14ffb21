"""When signals are trusted: a pure function of the signals, the operators' reviews and the
wordings' vectors, so that every worker reading the same rows learns the same phrasings.

A candidate is a (wording, entry) pair some customer or operator said is right. Every signal
whose wording is within `similarity` (cosine) of the candidate's counts for or against it:

- for it: picks of the entry after "Did you mean" (1), thumbs up on the entry's answer (0.5),
  an operator's answer from the entry (trusted alone);
- against it: thumbs down on the entry's answer or "none of these" when it was offered (-1),
  and picks, thumbs up or operator answers of another entry (the same weights, negated).

One source (a customer: a client address, a Telegram user) counts once per candidate, its
signals summed and clipped to [-1, 1], so that one customer, however many conversations they
open, is one voice. The candidate is learnt when the net of the voices reaches
`confirmations`, at least that many distinct sources and conversations are for it, and no
operator removed it; or when an operator approved it or answered with it.

A doubt is the mirror image: a (wording, entry) pair whose net is at most -`confirmations`.
The bot does not answer that entry directly for a question that near (it asks "Did you mean").
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

KINDS = ("pick", "none", "up", "down", "operator")
WEIGHTS = {"pick": 1.0, "up": 0.5, "operator": 1.0, "none": -1.0, "down": -1.0}
POSITIVE = frozenset({"pick", "up", "operator"})
APPROVED, REMOVED = "approved", "removed"
_BLOCK = 1024  # wordings compared at a time (bounded memory for any number of signals)


def wording_key(text: str) -> str:
    """How two wordings are compared for 'the same words': case, width, spaces, end marks."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split()).rstrip("?!. ")


@dataclass(frozen=True)
class Signal:
    """One stored signal (bot.storage.models.LearningSignal)."""

    id: int
    kind: str
    entry_id: str
    wording: str
    conversation_id: str
    source: str
    created_at: datetime
    channel: str = ""


@dataclass
class Learnt:
    """A candidate (wording, entry) and what the signals say of it."""

    wording: str
    entry_id: str
    state: str = "candidate"  # "learnt", "candidate", "removed", "doubt"
    net: float = 0.0
    sources: int = 0  # distinct sources for it
    against: int = 0  # distinct sources against it
    conversations: int = 0
    kinds: dict[str, int] = field(default_factory=dict)  # its own signals by kind
    channels: list[str] = field(default_factory=list)
    first: datetime | None = None
    last: datetime | None = None
    reviewed_by: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return wording_key(self.wording), self.entry_id


def judge(signals: Sequence[Signal], vectors: np.ndarray, confirmations: int,
          similarity: float, reviews: Mapping[tuple[str, str], tuple[str, str]] | None = None
          ) -> list[Learnt]:
    """Every candidate and doubt with its state; `vectors[i]` is signal i's wording, unit
    length; `reviews` maps (wording_key, entry) to (decision, operator), the latest one."""
    reviews = reviews or {}
    if not signals:
        return []
    keys = [wording_key(s.wording) for s in signals]
    unique: dict[str, int] = {}
    for key in keys:
        unique.setdefault(key, len(unique))
    row_of = np.array([unique[k] for k in keys])
    first_signal: dict[str, int] = {}
    for i, key in enumerate(keys):
        first_signal.setdefault(key, i)
    wording_vectors = np.asarray(vectors, dtype=np.float32)[[first_signal[k] for k in unique]]
    members: dict[int, list[int]] = defaultdict(list)  # unique wording: its signals
    for i, row in enumerate(row_of):
        members[int(row)].append(i)
    pairs: dict[tuple[int, str], list[int]] = defaultdict(list)  # (wording, entry): signals
    for i, s in enumerate(signals):
        pairs[(int(row_of[i]), s.entry_id)].append(i)
    results: list[Learnt] = []
    wanted = sorted({w for w, _ in pairs})
    for start in range(0, len(wanted), _BLOCK):
        block = wanted[start:start + _BLOCK]
        sims = wording_vectors[block] @ wording_vectors.T
        for b, w in enumerate(block):
            near = np.flatnonzero(sims[b] >= similarity - 1e-6)
            near_signals = [i for u in near for i in members[int(u)]]
            for entry_id in {signals[i].entry_id for i in members[w]}:
                own = pairs[(w, entry_id)]
                results.append(_judged(signals, own, near_signals, entry_id, confirmations,
                                       reviews))
    return results


def _judged(signals: Sequence[Signal], own: list[int], near: list[int], entry_id: str,
            confirmations: int, reviews: Mapping[tuple[str, str], tuple[str, str]]) -> Learnt:
    voices: dict[str, float] = defaultdict(float)
    conversations: set[str] = set()
    operator = None
    for i in near:
        s = signals[i]
        weight = WEIGHTS[s.kind]
        if s.entry_id != entry_id:
            weight = -weight if s.kind in POSITIVE else 0.0
        voices[s.source] += weight
        if s.entry_id == entry_id and s.kind in POSITIVE:
            conversations.add(s.conversation_id)
        if s.entry_id == entry_id and s.kind == "operator" and i in own:
            operator = s.source
    clipped = [max(-1.0, min(1.0, v)) for v in voices.values()]
    net = sum(clipped)
    first = signals[own[0]]
    item = Learnt(
        first.wording, entry_id, net=round(net, 3), sources=sum(v > 0 for v in clipped),
        against=sum(v < 0 for v in clipped), conversations=len(conversations),
        kinds=dict(sorted(_count(signals[i].kind for i in own).items())),
        channels=sorted({signals[i].channel for i in own if signals[i].channel}),
        first=min(signals[i].created_at for i in own),
        last=max(signals[i].created_at for i in own))
    review = reviews.get(item.key)
    own_positive = any(signals[i].kind in POSITIVE for i in own)
    if review is not None and review[0] == REMOVED:
        item.state, item.reviewed_by = REMOVED, review[1]
    elif review is not None and review[0] == APPROVED:
        item.state, item.reviewed_by = "learnt", review[1]
    elif operator is not None:
        item.state, item.reviewed_by = "learnt", operator.removeprefix("operator:")
    elif (own_positive and net >= confirmations - 1e-9 and item.sources >= confirmations
          and item.conversations >= confirmations):
        item.state = "learnt"
    elif net <= -confirmations + 1e-9 and item.against >= confirmations:
        item.state = "doubt"
    return item


def _count(kinds: object) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for kind in kinds:  # type: ignore[attr-defined]
        counts[kind] += 1
    return counts
