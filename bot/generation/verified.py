"""Verified release of generated text: a sentence reaches the customer only once it passes.

The model's pieces are cut into sentences as they complete; each is checked against the FAQ
entries in the prompt; a sentence that passes is released, and the first one that fails stops
generation there. What was released is the answer: it is never withdrawn.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from bot.generation.base import Prompt
from bot.generation.batching import BatchingGenerator
from bot.generation.grounding import SentenceCheck
from bot.generation.text import ENDS_WELL, RUN_ON
from bot.settings import GenerationSettings

# A sentence ends at . ! or ? (with closing quotes or brackets) followed by white space, or at a
# line break; "9.95" and "e.g. this" do not end one.
_END = re.compile(r"[.!?][\"')\]]*[ \t]+|[.!?][\"')\]]*\n\s*|\n\s*")
_ABBREVIATION = re.compile(r"(?:\b(?:e\.g|i\.e|etc|approx|incl|no|nr|mr|mrs|ms|dr|st|vs|ca)\.)$",
                           re.IGNORECASE)


CheckSentence = Callable[[str], Awaitable[SentenceCheck]]


@dataclass
class Outcome:
    """What happened in a verified stream, complete once the stream is exhausted."""

    released: str = ""  # exactly the text handed to the customer
    raw: str = ""  # what the model wrote, up to where it was stopped
    checks: list[SentenceCheck] = field(default_factory=list)  # every sentence checked, in order
    rejected: SentenceCheck | None = None  # the first that failed (it and the rest were held)
    cut_off: str = ""  # an unfinished last sentence, dropped


def next_sentence(buffer: str) -> tuple[str, str, str] | None:
    """(sentence, separator, rest) for the first complete sentence in `buffer`, if any.

    A boundary at the very end of the buffer does not count yet: a closing quote or the rest of
    an abbreviation may still follow.
    """
    buffer = buffer.lstrip()
    start = 0
    while (match := _END.search(buffer, start)) is not None:
        rest = buffer[match.end():]
        if not rest:
            return None
        head = buffer[:match.end()].rstrip()
        if _ABBREVIATION.search(head):
            start = match.end()
            continue
        separator = "\n" if "\n" in match.group() else " "
        return head, separator, rest
    return None


class VerifiedStream:
    """Async iterator over released text; `outcome` tells the rest once it is exhausted.

    With `per_sentence` False, sentences are checked as they complete but released only at the
    end, as one piece (the 'answer' release mode).
    """

    def __init__(self, pieces: AsyncIterator[str], check: CheckSentence, stop: Callable[[], None],
                 per_sentence: bool = True) -> None:
        self.pieces = pieces
        self.check = check
        self.stop = stop
        self.per_sentence = per_sentence
        self.outcome = Outcome()

    async def __aiter__(self) -> AsyncIterator[str]:
        outcome = self.outcome
        held, separator = "", ""
        sentences = self._sentences()
        try:
            async for sentence, next_separator in sentences:
                verdict = await self.check(sentence)
                outcome.checks.append(verdict)
                if not verdict.supported:
                    outcome.rejected = verdict
                    self.stop()
                    break
                text = (separator if outcome.released or held else "") + sentence
                separator = next_separator
                if self.per_sentence:
                    outcome.released += text
                    yield text
                else:
                    held += text
            if held:
                outcome.released = held
                yield held
        finally:
            await sentences.aclose()
            self.stop()

    async def _sentences(self) -> AsyncGenerator[tuple[str, str], None]:
        """Each sentence as the model completes it, with the separator that followed it.

        The last one comes only if it ends like a sentence (or is the whole answer); a cut-off
        tail goes to `outcome.cut_off` instead.
        """
        outcome = self.outcome
        buffer, separator, seen = "", "", False
        async for piece in self.pieces:
            outcome.raw += piece
            buffer += piece
            # A header right after a line break (possibly the one that ended the last
            # sentence) means the model started a new example turn: the answer ends there.
            before = "\n" if separator == "\n" and seen else ""
            run_on = RUN_ON.search(before + buffer)
            if run_on:
                buffer = buffer[:max(run_on.start() - len(before), 0)] + "\n"
                self.stop()
            while (found := next_sentence(buffer)) is not None:
                sentence, separator, buffer = found
                seen = True
                yield sentence, separator
            if run_on:
                break
        last = buffer.strip()
        if last and (ENDS_WELL.search(last) or not seen):
            yield last, ""
        elif last:
            outcome.cut_off = last


async def generated_pieces(generator: BatchingGenerator, prompt: Prompt,
                           params: GenerationSettings, cancel: threading.Event,
                           submitted: Callable[[], None] | None = None) -> AsyncIterator[str]:
    """The model's text for one prompt, piece by piece, without blocking the event loop.

    Setting `cancel` (or leaving the loop early) stops the model after its current token.
    `submitted` is called once the request is queued.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def post(item: str | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is gone: nobody is listening any more
            cancel.set()

    future = generator.submit([prompt], params, on_text=lambda _, text: post(text),
                              cancel=cancel)
    future.add_done_callback(lambda _: post(None))
    if submitted is not None:
        submitted()
    try:
        while (piece := await queue.get()) is not None:
            yield piece
        future.result()  # raises what the model raised
    finally:
        cancel.set()


async def one_piece(text: str) -> AsyncIterator[str]:
    """An already complete text as a stream of one piece."""
    yield text
