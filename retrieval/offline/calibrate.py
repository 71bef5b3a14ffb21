"""Answer and suggest thresholds calibrated on the FAQ's own held-out phrasings.

Each held-out phrasing is searched in an index of the other phrasings twice over: as itself (an
in-scope question: is its top entry right, and how sure?) and with its own entry taken away (an
out-of-scope question: a question about something the FAQ does not cover scores like this). The
answer threshold is the lowest score at which direct answers reach the target precision, with
out-of-scope questions weighted as `oos_share` of the traffic; the suggest threshold keeps the
'Did you mean' band for in-scope questions and sends most out-of-scope ones to the fallback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from retrieval.calibration import (
    ANSWER_FLOOR,
    FLOOR,
    MARGINS,
    Sample,
    Thresholds,
    calibrate,
    samples_from_hits,
)
from retrieval.corpus import FaqEntry
from retrieval.embedder import Embedder
from retrieval.index import FaqIndex

# The calibration itself is the retrieval core's (serving calibrates each FAQ too).
__all__ = ["ANSWER_FLOOR", "FLOOR", "MARGINS", "Sample", "Thresholds", "best_scoring",
           "calibrate", "held_out_samples", "samples_from_hits"]


def best_scoring(calibrations: Mapping[str, Thresholds]) -> str:
    """The scoring whose thresholds answer most held-out phrasings right (nearest on ties)."""
    return max(calibrations, key=lambda s: (calibrations[s].answered_right, s == "nearest"))


def held_out_samples(entries: Sequence[FaqEntry], tune: Sequence[Sequence[str]],
                     held_out: Sequence[tuple[int, str]], embedder: Embedder,
                     scorings: Sequence[str], outside: Sequence[str] = (),
                     learnt: Sequence[str] = (), lexical: str = "off"
                     ) -> dict[str, tuple[list[Sample], list[tuple[float, float]]]]:
    """Search each held-out phrasing, and each out-of-scope question, in an index of the
    entries' other (tuning) phrasings, under each scoring: the samples, and the questions'
    (top score, lead). Everything is embedded once; the scoring is a search-time choice.

    `learnt` are the out-of-scope questions the classifier scoring learns as a class
    (retrieval.out_of_scope). A question it learnt would score too low to calibrate on, so the
    out-of-scope questions are searched in two halves, each by a head that learnt the others.
    `lexical`: whether that head weighs the words too (retrieval.lexical), as it will serve.
    """
    kept = [replace(entry, questions=tuple(texts)) for entry, texts in zip(entries, tune,
                                                                           strict=True)]
    index = FaqIndex.build(kept, embedder)
    index.lexical = lexical
    position = {entry.id: i for i, entry in enumerate(kept)}
    phrasings = embedder.embed([text for _, text in held_out])
    questions = embedder.embed(list(outside))
    found = {}
    for scoring in scorings:
        index.scoring = scoring
        index.outside = learnt if scoring == "classifier" else ()
        hits = index.search_vectors(phrasings, 3, [text for _, text in held_out])
        samples = samples_from_hits([own for own, _ in held_out], [
            [(position[h.entry.id], h.score) for h in row] for row in hits])
        if not index.outside:
            rows = index.search_vectors(questions, 2, outside)
        else:
            rows = []
            for half in (0, 1):
                unseen = set(outside[half::2])
                twin = index.copy()
                # Questions taken away: the twin's head is fitted from scratch (the setter),
                # never refitted from one that saw them.
                twin.outside = tuple(q for q in index.outside if q not in unseen)
                rows += twin.search_vectors(questions[half::2], 2, outside[half::2])
        leads = [(row[0].score, row[0].score - row[1].score if len(row) > 1 else 1.0)
                 for row in rows if row]
        found[scoring] = (samples, leads)
    return found
