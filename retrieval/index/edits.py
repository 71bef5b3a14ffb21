"""New snapshots from old: phrasings and entries added or taken back while the index serves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import faiss
import numpy as np

from retrieval.corpus import FaqEntry
from retrieval.errors import RetrievalError
from retrieval.index.state import HeadMemory, Snapshot, snapshot

Embed = Callable[[list[str]], np.ndarray]


def extended(state: Snapshot, embed: Embed, entries: Sequence[FaqEntry] = (),
             phrasings: Sequence[tuple[str, str]] = ()) -> tuple[Snapshot, int]:
    """`state` with entries, and phrasings `(entry id, question)` of entries old or new, added
    (copy on write: a clone of the FAISS index); and how many phrasings were added.

    RetrievalError for an entry id that exists already or a phrasing of an unknown entry.
    """
    current = list(state.entries)
    position = {entry.id: i for i, entry in enumerate(current)}
    questions: list[str] = []
    owners: list[int] = []
    retired = set(state.retired)
    for entry in entries:
        if entry.id in retired:  # back again: its old phrasings stay removed
            retired.discard(entry.id)
            current[position[entry.id]] = entry
        elif entry.id in position:
            raise RetrievalError(f"there is already an FAQ entry '{entry.id}'")
        else:
            position[entry.id] = len(current)
            current.append(entry)
        questions += entry.questions
        owners += [position[entry.id]] * len(entry.questions)
    for entry_id, question in phrasings:
        if entry_id not in position or entry_id in retired:
            raise RetrievalError(f"no FAQ entry '{entry_id}' to add a phrasing to")
        i = position[entry_id]
        current[i] = replace(current[i], questions=(*current[i].questions, question))
        questions.append(question)
        owners.append(i)
    index = faiss.clone_index(state.index)
    if questions:
        index.add(embed(questions))
    owner = np.concatenate([state.owner, np.asarray(owners, dtype=np.int64)])
    removed = np.concatenate([state.removed, np.zeros(len(questions), bool)])
    # A new head, fitted from the last one (its decay and choice of words).
    return snapshot(index, current, frozenset(retired), state.phrasings + questions, owner,
                    removed, **settings_of(state)), len(questions)


def without(state: Snapshot, phrasings: Sequence[tuple[str, str]]) -> tuple[Snapshot, int]:
    """`state` with phrasings `(entry id, question)` taken out of search (an entry left without
    phrasings is retired: never found); and how many were removed."""
    removed = state.removed.copy()
    current = list(state.entries)
    position = {entry.id: i for i, entry in enumerate(current)}
    wanted = {(position[e], q) for e, q in phrasings if e in position}
    count = 0
    for i, (owner, question) in enumerate(zip(state.owner, state.phrasings, strict=True)):
        if not removed[i] and (int(owner), question) in wanted:
            removed[i] = True
            count += 1
    retired = set(state.retired)
    for owner, question in wanted:
        entry = current[owner]
        kept = tuple(q for q in entry.questions if q != question)
        if kept:
            current[owner] = replace(entry, questions=kept)
        else:  # keeps its last phrasing as its title, for messages that cite it
            retired.add(entry.id)
    settings = settings_of(state)
    if count:  # the next head is fitted from zero (with the same decay and words choice):
        settings["memory"] = replace(state.memory, last_head=None)  # no trace of the phrasing
    return snapshot(state.index, current, frozenset(retired), state.phrasings, state.owner,
                    removed, **settings), count


def settings_of(state: Snapshot) -> dict[str, object]:
    """What a snapshot made from `state` keeps: scoring, words, out-of-scope class, memory."""
    return {"scoring": state.scoring, "lexical": state.lexical, "outside": state.outside,
            "outside_vectors": state.outside_vectors, "memory": state.memory}


def forgotten(state: Snapshot) -> Snapshot:
    """`state` without its head and what the last fit chose: the next head starts afresh."""
    return replace(state, head=None, memory=HeadMemory())
