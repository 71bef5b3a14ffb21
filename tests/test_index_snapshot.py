"""FaqIndex's state is one immutable snapshot: searches running while phrasings are added,
removed and the head refitted each see one whole state, never a mix of two."""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from retrieval.corpus import FaqEntry
from retrieval.index import FaqHit, FaqIndex

DIMENSION = 16
JOIN_SECONDS = 120.0


class HashEmbedder:
    """A unit vector per text from its hash; texts sharing a first word lie close together."""

    name = "hash"
    dimension = DIMENSION

    def embed(self, texts: Sequence[str], progress: object = None) -> np.ndarray:
        """One row per text, deterministic."""
        rows = [self._vector(t.split()[0]) + 0.3 * self._vector(t) for t in texts]
        matrix = np.asarray(rows, dtype=np.float32).reshape(len(texts), DIMENSION)
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True).clip(1e-9)

    @staticmethod
    def _vector(text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(DIMENSION)


def _entries(count: int = 12) -> list[FaqEntry]:
    return [FaqEntry(f"e{i}", (f"t{i} one", f"t{i} two", f"t{i} three"), f"answer {i}")
            for i in range(count)]


QUERIES = [f"t{i} asked" for i in range(12)] + ["t3 two", "unknown words", "t11 three"]


def _check(hits: list[FaqHit], top_k: int) -> None:
    """A search's hits read from one state: each entry holds the phrasing it matched."""
    assert len(hits) <= top_k
    assert len({h.entry.id for h in hits}) == len(hits), "entries are distinct"
    for hit in hits:
        assert math.isfinite(hit.score), hit
        assert hit.matched_question in hit.entry.questions, \
            f"{hit.matched_question!r} is not a phrasing of {hit.entry.id} in the same state"


@pytest.mark.parametrize("scoring", ["nearest", "blend", "classifier"])
def test_searches_while_a_writer_adds_removes_and_refits_see_one_state(scoring: str) -> None:
    index = FaqIndex.build(_entries(), HashEmbedder(), scoring=scoring)
    stop = threading.Event()
    failures: list[BaseException] = []
    searched = [0]

    def read() -> None:
        try:
            while not stop.is_set():
                for hits in index.search_many(QUERIES, top_k=3):
                    _check(hits, 3)
                searched[0] += 1
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            stop.set()

    def write() -> None:
        try:
            for round_ in range(12):
                if stop.is_set():
                    return
                extra = [(f"e{i}", f"t{i} extra {round_}") for i in range(0, 12, 3)]
                index.extend(phrasings=extra)
                index.extend([FaqEntry(f"new{round_}", (f"t{round_} new",), "new answer")])
                index.remove(extra[:2])
                index.remove([(f"new{round_}", f"t{round_} new")])  # retired: never found
                if scoring == "classifier":
                    index.classifier_head()
                if round_ % 4 == 3:
                    index.invalidate()
                    index.outside = ["unknown words"] if round_ % 8 == 3 else ()
        except BaseException as exc:
            failures.append(exc)
        finally:
            stop.set()

    readers = [threading.Thread(target=read) for _ in range(3)]
    writer = threading.Thread(target=write)
    for thread in (*readers, writer):
        thread.start()
    for thread in (writer, *readers):
        thread.join(JOIN_SECONDS)
    assert not any(t.is_alive() for t in (writer, *readers)), "a thread hung"
    assert not failures, failures[0]
    assert searched[0] > 0
    final = index.search_many(QUERIES, top_k=3)
    for hits in final:
        _check(hits, 3)
    assert not any(h.entry.id.startswith("new") for hits in final for h in hits)


def test_a_search_keeps_its_snapshot_when_a_writer_swaps_it_mid_search(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from retrieval.index import scoring as scoring_module

    index = FaqIndex.build(_entries(), HashEmbedder())
    before = index.search_many(["t1 two", "t2 three"], top_k=1)
    original = scoring_module.entries_of
    swapped = threading.Event()

    def swap_then_rank(*args: object, **kwargs: object) -> list[FaqHit]:
        if not swapped.is_set():  # after the first query's ranking, before the second's
            swapped.set()
            assert index.remove([("e2", "t2 three"), ("e1", "t1 two")]) == 2
            index.extend([FaqEntry("late", ("t2 three",), "late answer")])
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scoring_module, "entries_of", swap_then_rank)
    during = index.search_many(["t1 two", "t2 three"], top_k=1)
    assert swapped.is_set()
    assert during == before, "both queries answered from the state the search started with"
    assert [h.matched_question for h in during[1]] == ["t2 three"]
    assert during[1][0].entry.id == "e2"
    after = index.search_many(["t1 two", "t2 three"], top_k=1)
    assert after[1][0].entry.id == "late" and after[1][0].score == pytest.approx(1.0, abs=1e-5)
    assert after[0][0].matched_question != "t1 two"


def test_the_snapshot_is_frozen_and_replaced_whole() -> None:
    import dataclasses

    index = FaqIndex.build(_entries(), HashEmbedder(), scoring="blend")
    first = index._snapshot
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.entries = []  # type: ignore[misc]
    assert not first.owner.flags.writeable and not first.removed.flags.writeable
    index.extend(phrasings=[("e0", "t0 four")])
    second = index._snapshot
    assert second is not first and len(second.phrasings) == len(first.phrasings) + 1
    assert first.derived is not None and second.derived is not None, "made at snapshot build"
    assert len(first.phrasings) == 36, "the old snapshot is left as it was"
