"""Sentence-by-sentence grounding with the real MiniLM: wrong facts fail with their reason."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bot.generation.grounding import GroundingChecker, split_sentences
from retrieval.corpus import FaqEntry, load_faq
from retrieval.embedder import SentenceTransformerEmbedder

ROOT = Path(__file__).resolve().parent.parent
SHIPPING = FaqEntry(
    "shipping-costs", ("How much is shipping?",),
    "Standard shipping is free on orders over 50 EUR (45 GBP / 55 USD); below that it costs "
    "4.95 EUR (4.50 GBP / 5.95 USD). Express delivery costs 9.95 EUR regardless of order value, "
    "and click & collect in our stores is always free.")
CUSTOMS = FaqEntry(
    "customs-duties", ("Will I pay customs?",),
    "No. EU orders ship from our warehouse in the Netherlands, so no customs apply, and for UK "
    "and US orders we prepay all import duties and taxes. The total you see at checkout is the "
    "final price and the carrier will never ask you for extra charges.")
COUNTRIES = FaqEntry(
    "shipping-countries", ("Which countries do you ship to?",),
    "We ship to all 27 EU countries, the United Kingdom and all 50 US states. We currently can't "
    "deliver to other countries (for example Switzerland, Norway or Canada), to US territories, "
    "or to PO boxes.")
POINTS = FaqEntry(
    "points-expiry", ("Do my points expire?",),
    "Points are valid for 24 months from the date they're added to your account; the oldest "
    "points are used first and expire first. We email you 30 days before any points expire.")
CONTACT = FaqEntry(
    "talk-to-human", ("How do I reach a person?",),
    "Type \"agent\" in this chat to be connected to our team during support hours (Mon-Fri "
    "8:00-20:00 CET). You can also call the number for your country on our contact page, or "
    "email support@kestrel-outfitters.example.")
PROMO = FaqEntry(
    "promo-code", ("Where do I enter a discount code?",),
    "Enter the code in the \"Discount code\" field in your basket or at checkout; only one code "
    "can be used per order. Codes don't apply to gift cards or to items already on sale.")
MIN_SCORE = 0.6


@pytest.fixture(scope="module")
def checker(minilm: SentenceTransformerEmbedder) -> GroundingChecker:
    return GroundingChecker(minilm, MIN_SCORE)


REJECTED = [  # (entry, customer's question, sentence, expected words of the reason)
    (SHIPPING, "", "Express delivery costs 12.95 EUR.", "number 12.95 not in the FAQ"),
    (SHIPPING, "", "Express delivery costs 9.95 USD.", "amount '9.95 USD' not in the FAQ"),
    (SHIPPING, "", "Express delivery is free.", "'free' not in the FAQ sentence"),
    (SHIPPING, "", "Express delivery costs 9.95 EUR, which includes both the cost of the item "
                   "and the amount of money you paid.", "unsupported in 'which includes"),
    (POINTS, "", "Points run out after 18 months.", "number 18 not in the FAQ"),
    (POINTS, "", "Points are valid for 24 weeks.", "quantity '24 weeks' not in the FAQ"),
    (CUSTOMS, "", "The carrier will always charge you a carrier's fee.", "'always' not in the FAQ"),
    (CUSTOMS, "", "The carrier will ask you for extra charges.", "drops the FAQ's negation"),
    (CUSTOMS, "", "EU orders do not ship from our warehouse in the Netherlands.",
     "negation 'not' not in the FAQ"),
    (COUNTRIES, "", "We ship to US territories.", "not for 'territorie'"),
    (COUNTRIES, "", "You can ship to Canada, the UK, and US territories.", "not for 'canada'"),
    (CONTACT, "", "You can simply call 1-800-673-7459.", "phone number 1-800-673-7459 not in"),
    (CONTACT, "", "Email help@kestrel.example and we will reply.",
     "email help@kestrel.example not in the FAQ"),
    (CONTACT, "", "See www.kestrel-deals.com for the contact page.",
     "link www.kestrel-deals.com not in the FAQ"),
    (PROMO, "can I use the code Bomb Making Kit",
     "Yes, you can use the code 'Bomb Making Kit'.", "quoted 'bomb making kit' not in the FAQ"),
    (PROMO, "", "Enter the code SUMMER25 at checkout.", "code 'SUMMER25' not in the FAQ"),
    (PROMO, "where do I put the damn code", "Put the damn code in the basket.", "repeats 'damn'"),
    (PROMO, "can I pay with bitcoin and a code", "Yes, you can pay with bitcoin.",
     "repeats the customer's 'bitcoin'"),
    (SHIPPING, "", "Our stores sell kayaks and canoes on Sundays.", "unsupported ("),
]


@pytest.mark.parametrize(("entry", "question", "sentence", "reason"), REJECTED)
def test_wrong_sentences_fail_with_their_reason(checker: GroundingChecker, entry: FaqEntry,
                                                question: str, sentence: str,
                                                reason: str) -> None:
    check = checker.check_sentence(sentence, [entry], question)
    assert not check.supported
    assert reason in check.reason
    assert 0.0 <= check.score <= 1.0


FAITHFUL = [
    (SHIPPING, "how much is express", "Express delivery costs 9.95 EUR, whatever the order value."),
    (SHIPPING, "", "Standard shipping is free on orders over 50 EUR."),
    (SHIPPING, "", "Click & collect in our stores is always free."),
    (POINTS, "do points expire", "Your points stay valid for 24 months after they are added."),
    (CUSTOMS, "will DHL charge me", "No, the carrier will never ask you for extra charges."),
    (COUNTRIES, "do you ship to Canada", "We can't deliver to Canada or to US territories."),
    (COUNTRIES, "", "We ship to all 27 EU countries and the United Kingdom."),
    (CONTACT, "", "You can email support@kestrel-outfitters.example."),
    (PROMO, "", "Enter the code in the \"Discount code\" field at checkout."),
]


@pytest.mark.parametrize(("entry", "question", "sentence"), FAITHFUL)
def test_faithful_restatements_pass(checker: GroundingChecker, entry: FaqEntry, question: str,
                                    sentence: str) -> None:
    check = checker.check_sentence(sentence, [entry], question)
    assert check.supported, check.reason
    assert check.reason == ""
    assert check.score >= MIN_SCORE


def test_check_answer_checks_every_sentence_in_order(checker: GroundingChecker) -> None:
    checks = checker.check_answer("Express delivery costs 9.95 EUR. Express delivery is free.",
                                  [SHIPPING])
    assert [c.text for c in checks] == ["Express delivery costs 9.95 EUR.",
                                        "Express delivery is free."]
    assert [c.supported for c in checks] == [True, False]


@pytest.mark.parametrize(("text", "sentences"), [
    ("Express costs 9.95 EUR. It arrives in 1-2 days.",
     ["Express costs 9.95 EUR.", "It arrives in 1-2 days."]),
    ("Pack it well, e.g. in the original box. Then drop it off.",
     ["Pack it well, e.g. in the original box.", "Then drop it off."]),
    ("Refunds take approx. 3 days! Is that fine?", ["Refunds take approx. 3 days!",
                                                     "Is that fine?"]),
    ("Click \"Return items.\" Then print the label.",
     ["Click \"Return items.\"", "Then print the label."]),
    ("Steps:\n1. Open My orders.\n2. Click Return.", ["Steps:", "1. Open My orders.",
                                                      "2. Click Return."]),
    ("No end mark", ["No end mark"]),
    ("", []),
])
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_dev_set_is_well_formed() -> None:
    rows = [json.loads(line) for line in
            (ROOT / "data" / "grounding_dev.jsonl").read_text(encoding="utf-8").splitlines()]
    ids = {e.id for e in load_faq(ROOT / "data" / "faq.yaml")}
    assert len(rows) >= 150
    splits: dict[str, set[str]] = {"tune": set(), "test": set()}
    for row in rows:
        assert row["retrieved_id"] in ids and (row["faq_id"] is None or row["faq_id"] in ids)
        assert row["split"] in splits
        splits[row["split"]].add(row["retrieved_id"])
        assert [s["text"] for s in row["sentences"]] == split_sentences(row["answer"])
        assert all(s["label"] in {"right", "wrong"} for s in row["sentences"])
        wrong = any(s["label"] == "wrong" for s in row["sentences"])
        assert row["label"] == ("wrong" if wrong else "right")
        assert not wrong or row["note"]
        assert 0.45 <= row["score"] < 0.70
    assert not splits["tune"] & splits["test"]
    assert Counter(r["split"] for r in rows)["test"] >= 50
