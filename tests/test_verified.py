"""VerifiedStream: sentences are released only once checked, in order, and match tidy_reply."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.generation.grounding import SentenceCheck
from bot.generation.text import tidy_reply
from bot.generation.verified import VerifiedStream, next_sentence

pytestmark = pytest.mark.timeout(30)


async def tokens(text: str, size: int = 3) -> AsyncIterator[str]:
    """The text in small pieces, as a model would produce it."""
    for i in range(0, len(text), size):
        yield text[i:i + size]


async def run(text: str, banned: str = "\u0000", per_sentence: bool = True
              ) -> tuple[list[str], VerifiedStream, list[int]]:
    stops: list[int] = []

    async def check(sentence: str) -> SentenceCheck:
        ok = banned not in sentence
        reason = "" if ok else f"{banned} not in the FAQ"
        return SentenceCheck(sentence, 1.0 if ok else 0.0, ok, reason)

    stream = VerifiedStream(tokens(text), check, lambda: stops.append(1), per_sentence)
    return [piece async for piece in stream], stream, stops


@pytest.mark.parametrize(("text", "expected"), [
    ("Yes, e.g. by post. Then more", ("Yes, e.g. by post.", " ", "Then more")),
    ("It costs 9.95 EUR. Next", ("It costs 9.95 EUR.", " ", "Next")),
    ('He said "go." Then', ('He said "go."', " ", "Then")),
    ("- one\n- two", ("- one", "\n", "- two")),
    ("approx. 3 days", None),
    ("No end yet", None),
    ("Ends here. ", None),  # nothing after the boundary yet: a quote may still follow
])
def test_next_sentence(text: str, expected: tuple[str, str, str] | None) -> None:
    assert next_sentence(text) == expected


@pytest.mark.parametrize("text", [
    "You can return it within 30 days. Returns are free.",
    "You can return it within 30 days. Returns are free. And you can also",
    "You can return it.\nQuestion: can I also swap it? Yes you can.",
    "Open My orders and click Track.\n\nFAQ: something else entirely.",
    "Returns are free",
    "",
])
async def test_what_is_released_is_the_tidied_reply(text: str) -> None:
    pieces, stream, _ = await run(text)
    assert "".join(pieces) == stream.outcome.released == tidy_reply(text)


async def test_a_failing_sentence_stops_and_nothing_after_it_is_released() -> None:
    text = "Points last 24 months. They expire after 18 months. Call us any time."
    pieces, stream, stops = await run(text, banned="18")
    assert pieces == ["Points last 24 months."]
    assert stream.outcome.rejected is not None and "18" in stream.outcome.rejected.reason
    assert stops, "the model was told to stop"
    assert "Call us" not in "".join(pieces)


async def test_answer_mode_releases_one_checked_piece() -> None:
    text = "Points last 24 months. You earn 1 point per euro. And"
    pieces, stream, _ = await run(text, per_sentence=False)
    assert pieces == ["Points last 24 months. You earn 1 point per euro."]
    assert stream.outcome.cut_off == "And"


async def test_nothing_is_released_when_the_first_sentence_fails() -> None:
    pieces, stream, _ = await run("Call 0800 123 456. Then go on.", banned="0800")
    assert pieces == [] and stream.outcome.released == ""
