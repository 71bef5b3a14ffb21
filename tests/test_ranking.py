"""Grounding scores with the real embedder: supported answers beat made-up ones."""

from __future__ import annotations

from bot.generation.ranking import grounding_scores
from bot.generation.text import tidy_reply
from retrieval.corpus import FaqEntry
from retrieval.embedder import SentenceTransformerEmbedder

RETURNS = FaqEntry("return-policy", ("What is your return policy?",),
                   "You can return most items within 30 days of delivery for a full refund, "
                   "as long as they are unused and have their tags attached.")


def test_supported_answer_ranks_first(minilm: SentenceTransformerEmbedder) -> None:
    candidates = [
        "Our stores are open on Sundays and we sell kayaks.",
        "You can return unused items with tags within 30 days of delivery for a full refund.",
        "",
    ]
    scores = grounding_scores(candidates, [RETURNS], minilm)
    assert scores[1] > 0.8, scores
    assert scores[0] < 0.4, scores
    assert scores[2] == 0.0


def test_numbers_not_in_the_faq_are_penalised(minilm: SentenceTransformerEmbedder) -> None:
    right, wrong = grounding_scores(
        ["You can return items within 30 days of delivery for a full refund.",
         "You can return items within 90 days of delivery for a full refund."], [RETURNS], minilm)
    assert right - wrong > 0.1


def test_tidy_reply() -> None:
    assert tidy_reply("Returns are free. You can also") == "Returns are free."
    assert tidy_reply("Yes, within 30 days!\nQuestion: and more?") == "Yes, within 30 days!"
    assert tidy_reply("It costs 9.95 EUR.") == "It costs 9.95 EUR."
    assert tidy_reply("no sentence end at all") == "no sentence end at all"
