"""bot/learning/trust.py's `judge`: when customers' and operators' signals make a wording
trusted for an entry (or doubted), with vectors made by hand so that similarity is exact."""

from __future__ import annotations

import time
import tracemalloc
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bot.learning.trust import REMOVED, Learnt, Signal, judge, wording_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WORDING = "I ordered the wrong colour, can I fix it"


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


class Signals:
    """Signals and their vectors, built one by one."""

    def __init__(self) -> None:
        self.items: list[Signal] = []
        self.vectors: list[np.ndarray] = []

    def add(self, kind: str, entry: str, source: str, conversation: str | None = None,
            wording: str = WORDING, vector: np.ndarray | None = None) -> None:
        n = len(self.items)
        self.items.append(Signal(n + 1, kind, entry, wording, conversation or f"c{n}",
                                 source, T0 + timedelta(minutes=n), "web"))
        self.vectors.append(unit(1, 0, 0) if vector is None else vector)

    def judge(self, confirmations: int = 3, similarity: float = 0.8,
              reviews: dict[tuple[str, str], tuple[str, str]] | None = None) -> list[Learnt]:
        return judge(self.items, np.stack(self.vectors), confirmations, similarity, reviews)

    def state(self, entry: str, wording: str = WORDING, **options: object) -> Learnt:
        found = [item for item in self.judge(**options)  # type: ignore[arg-type]
                 if item.key == (wording_key(wording), entry)]
        assert len(found) == 1, found
        return found[0]


def test_a_wording_is_learnt_at_k_distinct_customers_not_before() -> None:
    signals = Signals()
    for n in range(2):
        signals.add("pick", "change-order", f"web:{n}")
    assert signals.state("change-order").state == "candidate"
    signals.add("pick", "change-order", "web:2")
    learnt = signals.state("change-order")
    assert (learnt.state, learnt.sources, learnt.conversations, learnt.net) == \
        ("learnt", 3, 3, 3.0)


def test_one_customer_in_many_conversations_counts_once() -> None:
    signals = Signals()
    for n in range(10):
        signals.add("pick", "change-order", "web:same", conversation=f"c{n}")
    item = signals.state("change-order")
    assert (item.state, item.sources, item.net, item.conversations) == \
        ("candidate", 1, 1.0, 10)
    signals.add("up", "change-order", "web:other")  # a weak second voice is not a third
    signals.add("pick", "change-order", "web:third")
    assert signals.state("change-order").state == "candidate"  # net 2.5 < 3


def test_k_customers_in_one_conversation_are_not_enough() -> None:
    signals = Signals()
    for n in range(3):
        signals.add("pick", "change-order", f"web:{n}", conversation="shared")
    assert signals.state("change-order").state == "candidate"


def test_conflicting_picks_cancel() -> None:
    signals = Signals()
    for n in range(3):
        signals.add("pick", "change-order", f"web:honest{n}")
        signals.add("pick", "wrong-item", f"web:liar{n}")
    for entry in ("change-order", "wrong-item"):
        item = signals.state(entry)
        assert (item.state, item.net, item.sources, item.against) == ("candidate", 0.0, 3, 3)


def test_more_honest_customers_win() -> None:
    signals = Signals()
    for n in range(4):
        signals.add("pick", "change-order", f"web:honest{n}")
    signals.add("pick", "wrong-item", "web:liar")
    assert signals.state("change-order", confirmations=3).state == "learnt"  # 4 - 1
    # and the other entry is doubted for this wording: never answered directly for it
    assert signals.state("wrong-item", confirmations=3).state == "doubt"


def test_an_operator_alone_is_trusted() -> None:
    signals = Signals()
    signals.add("operator", "change-order", "operator:ann")
    item = signals.state("change-order")
    assert (item.state, item.reviewed_by) == ("learnt", "ann")


def test_a_removal_beats_everything_and_an_approval_needs_no_customers() -> None:
    signals = Signals()
    signals.add("operator", "change-order", "operator:ann")
    for n in range(5):
        signals.add("pick", "change-order", f"web:{n}")
    removed = {(wording_key(WORDING), "change-order"): (REMOVED, "bob")}
    item = signals.state("change-order", reviews=removed)
    assert (item.state, item.reviewed_by) == ("removed", "bob")
    lone = Signals()
    lone.add("pick", "change-order", "web:0")
    approved = {(wording_key(WORDING.upper() + "?"), "change-order"): ("approved", "bob")}
    assert lone.state("change-order", reviews=approved).state == "learnt"


def test_k_customers_against_a_direct_answer_make_a_doubt() -> None:
    signals = Signals()
    signals.add("down", "missing-items", "web:0")
    signals.add("none", "missing-items", "web:1")
    assert signals.state("missing-items").state == "candidate"
    signals.add("down", "missing-items", "web:2")
    doubt = signals.state("missing-items")
    assert (doubt.state, doubt.net, doubt.against) == ("doubt", -3.0, 3)
    again = Signals()
    for n in range(3):
        again.add("down", "missing-items", "web:same", conversation=f"c{n}")
    assert again.state("missing-items").state == "candidate"  # one customer, one voice


def test_wordings_count_together_only_within_the_similarity() -> None:
    near = unit(0.85, float(np.sqrt(1 - 0.85 ** 2)), 0)  # cosine 0.85 with unit(1, 0, 0)
    signals = Signals()
    signals.add("pick", "change-order", "web:0", wording="can I fix my order")
    signals.add("pick", "change-order", "web:1", wording="can I amend my order", vector=near)
    assert [i.state for i in signals.judge(confirmations=2, similarity=0.8)] == \
        ["learnt", "learnt"]
    assert [i.state for i in signals.judge(confirmations=2, similarity=0.9)] == \
        ["candidate", "candidate"]
    assert [i.state for i in signals.judge(confirmations=2, similarity=0.85)] == \
        ["learnt", "learnt"]  # at the threshold: counts


def test_the_same_words_are_one_candidate() -> None:
    signals = Signals()
    signals.add("pick", "change-order", "web:0", wording="Can I fix it?")
    signals.add("pick", "change-order", "web:1", wording="can  i FIX it")
    [item] = signals.judge(confirmations=2)
    assert (item.state, item.wording, item.kinds) == ("learnt", "Can I fix it?", {"pick": 2})


def test_many_signals_are_judged_in_bounded_time_and_memory() -> None:
    rng = np.random.default_rng(7)
    n = 6000  # unique wordings: a full similarity matrix would be 144 MB
    signals = Signals()
    for i in range(n):
        signals.add("pick", f"e{i % 50}", f"web:{i % 997}", wording=f"question number {i}",
                    vector=unit(*rng.normal(size=32)))
    tracemalloc.start()
    started = time.monotonic()
    try:
        items = signals.judge(confirmations=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(items) == n and all(i.state == "candidate" for i in items)
    assert peak < 80 * 2 ** 20, f"peak {peak / 2 ** 20:.0f} MB"
    assert time.monotonic() - started < 60


def test_nothing_to_judge() -> None:
    assert judge([], np.zeros((0, 3), np.float32), 3, 0.8) == []


@pytest.mark.parametrize(("a", "b"), [("Can I fix it?", "can i fix it"),
                                      ("\uff43\uff41\uff4e I fix it!", "can i fix it"),  # wide
                                      ("  can\tI  fix it. ", "can i fix it")])
def test_wording_key(a: str, b: str) -> None:
    assert wording_key(a) == wording_key(b)
