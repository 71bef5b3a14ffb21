"""The decision for one message, step by step: screen the input, respect who holds the
conversation, canned intents, an answer to the bot's last question, then search and band."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

from bot.dialogue import actions, replies
from bot.dialogue.generated import generate
from bot.dialogue.search import retrieve
from bot.dialogue.turn import Event, Turn, normalise
from bot.errors import GenerationError, ModelError
from bot.intents import AFFIRMATIVE, NEGATIVE, pick, simple
from bot.storage import Message
from bot.types import BotReply, ConversationStatus, Decision, UserMessage
from retrieval.bands import Band
from retrieval.index import FaqHit

if TYPE_CHECKING:
    from bot.dialogue.manager import DialogueManager

log = logging.getLogger(__name__)


async def decide(dm: DialogueManager, message: UserMessage, turn: Turn) -> AsyncIterator[Event]:
    """Text events (of a generated answer) and then the one reply the policy chose."""
    conversation = message.conversation_id
    screened = await screen(dm, message, turn)
    if isinstance(screened, BotReply):
        yield screened
        return
    text = screened
    plain = simple(text)
    early = (await held_or_waiting(dm, conversation)
             or intent_reply(dm, conversation, text, plain))
    if early is not None:
        yield early
        return
    last = await dm.store.last_bot_message(conversation)
    steps = await answer_to_last(dm, message, text, plain, last)
    if isinstance(steps, BotReply):
        yield steps
        return
    if steps is None:
        steps = searched(dm, conversation, text, turn)
    async for event in steps:
        yield event


async def screen(dm: DialogueManager, message: UserMessage, turn: Turn) -> BotReply | str:
    """An invalid message's or a guard's reply, or the text the turn goes on with."""
    persona, conversation = dm.persona, message.conversation_id
    text = normalise(message.text)
    if not text:
        return BotReply(persona.render(persona.empty_text), Decision.INVALID, conversation,
                        confidence=1.0)
    if len(text) > dm.dialogue.max_input_chars:
        return BotReply(
            persona.render(persona.too_long_text, max_chars=dm.dialogue.max_input_chars),
            Decision.INVALID, conversation, confidence=1.0,
            meta={"input_chars": len(message.text)})
    if dm.safety is None:
        return text
    guarded = await guard_input(dm, message, turn)
    if isinstance(guarded, str) and not guarded:  # nothing but invisible characters
        return BotReply(persona.render(persona.empty_text), Decision.INVALID, conversation,
                        confidence=1.0)
    return guarded


async def guard_input(dm: DialogueManager, message: UserMessage, turn: Turn) -> BotReply | str:
    """The input guards, off the event loop: a refusal, or the text the turn goes on with."""
    safety = dm.safety
    assert safety is not None
    conversation = message.conversation_id
    left = safety.cooldown_left(conversation)
    refusal = safety.cooldown_refusal(left) if left else None
    if refusal is None:
        loop = asyncio.get_running_loop()
        # The raw text: the normaliser collapses white space itself, after reading wide gaps
        # between spelled-out letters as word breaks ("i g n o r e   y o u r").
        result = await loop.run_in_executor(
            dm.executor, safety.check_input, message.text, message.user_id,
            conversation, message.channel)
        turn.verdicts_in = result.stored()
        turn.vectors = result.context.vectors
        if result.allowed:
            return safety.turn_text(result)
        assert result.blocked is not None
        refusal = safety.refusal(conversation, result.blocked)
    return BotReply(refusal.text, refusal.decision, conversation, confidence=1.0,
                    meta=refusal.meta)


async def held_or_waiting(dm: DialogueManager, conversation: str) -> BotReply | None:
    """With a human: silence while an operator holds it, else 'a colleague replies'."""
    row = await dm.store.get_conversation(conversation)
    if row is None or row.status != ConversationStatus.HANDOFF.value:
        return None
    if row.claimed_by is not None:
        # An operator holds it: they answer, the bot stays silent (docs/operators.md).
        return BotReply("", Decision.HELD, conversation, confidence=1.0,
                        meta={"claimed_by": row.claimed_by})
    return BotReply(dm.persona.render(dm.persona.waiting_text), Decision.WAITING,
                    conversation, confidence=1.0)


def intent_reply(dm: DialogueManager, conversation: str, text: str,
                 plain: str) -> BotReply | None:
    """A canned reply: asking for a human, refusing one, asking who answers."""
    persona = dm.persona
    if dm.intents.wants_human(text):
        return replies.handoff(persona, conversation)
    if dm.intents.refuses_human(text):
        return BotReply(persona.render(persona.stay_text), Decision.ANSWER, conversation,
                        confidence=1.0, meta={"intent": "no-human"})
    if dm.intents.asks_identity(plain):
        return BotReply(persona.render(persona.identity_text), Decision.ANSWER, conversation,
                        confidence=1.0, meta={"intent": "identity"})
    return None


async def answer_to_last(dm: DialogueManager, message: UserMessage, text: str, plain: str,
                         last: Message | None) -> BotReply | AsyncIterator[Event] | None:
    """A reply to the bot's last question: the next step of an action it asked for, a pick or
    'no' after 'Did you mean', 'yes' to the fallback's offer of a human. A pick or 'none of
    these' is also a learning signal."""
    conversation = message.conversation_id
    pending = actions.record_of(last, dm.actions)
    if pending is not None and dm.actions is not None:
        steps = actions.resume(dm.actions, dm.persona, message, text, plain, *pending)
        if steps is not None:
            return steps
    if last is not None and last.decision == Decision.CLARIFY.value:
        by_id = dm.index.by_id
        picked = pick(plain, [by_id[i] for i in last.faq_ids if i in by_id])
        if picked is not None:
            if dm.learning is not None:
                await dm.learning.after_clarify(conversation, last, picked.id, message.sender,
                                                message.channel)
            action = dm.actions.get(picked.id) if dm.actions is not None else None
            if action is not None and dm.actions is not None:
                asked = str((last.meta or {}).get("retrieval_query") or "")
                return actions.start(dm.actions, dm.persona, conversation, action, asked)
            score = dict(zip(last.faq_ids, last.scores, strict=False)).get(picked.id, 0.0)
            return replies.answer(conversation, FaqHit(picked, score, picked.question))
        if plain in NEGATIVE:
            if dm.learning is not None:
                await dm.learning.after_clarify(conversation, last, None, message.sender,
                                                message.channel)
            return replies.fallback(dm.persona, conversation, 1.0)
    if last is not None and last.decision == Decision.FALLBACK.value and plain in AFFIRMATIVE:
        return replies.handoff(dm.persona, conversation)
    return None


async def searched(dm: DialogueManager, conversation: str, text: str,
                   turn: Turn) -> AsyncIterator[Event]:
    """Search the FAQ and reply by band: answer, the middle band, or fallback."""
    if dm.faq_sync is not None:
        await dm.faq_sync()
    history = await dm.store.history(conversation, limit=dm.dialogue.history_turns) \
        if dm.dialogue.history_turns else []
    loop = asyncio.get_running_loop()
    found = await loop.run_in_executor(dm.executor, retrieve, dm.index, dm.retrieval.top_k,
                                       text, history, turn.vectors)
    hits = found.hits
    top = hits[0].score if hits else 0.0
    turn.meta.update({"retrieval_query": found.query,
                      "retrieved": [{"id": h.entry.id, "score": round(h.score, 4)}
                                    for h in hits]})
    reply: BotReply
    band = replies.band(dm.retrieval, hits, dm.index.calibration).band
    if band is Band.ANSWER and await doubted(dm, found.query, hits[0], turn):
        band = Band.SUGGEST  # customers agreed this wording does not mean that entry
        turn.meta["doubted"] = hits[0].entry.id
    action = dm.actions.get(hits[0].entry.id) if dm.actions is not None and hits else None
    if band is Band.ANSWER and action is not None and dm.actions is not None:
        async for event in actions.start(dm.actions, dm.persona, conversation, action, text,
                                         found.query):
            yield (replace(event, meta={**turn.meta, **event.meta})
                   if isinstance(event, BotReply) else event)
        return
    if band is Band.ANSWER:
        reply = replies.answer(conversation, hits[0])
    elif band is Band.SUGGEST:
        middle = dm.dialogue.middle
        if middle == "generate" and (not dm.can_generate or action is not None):
            middle = "clarify"  # the model cannot look anything up: "Did you mean" instead
        if middle == "generate":
            generated: BotReply | None = None
            async for event in middle_generated(dm, conversation, text, hits, history, turn):
                if isinstance(event, BotReply):
                    generated = event
                else:
                    yield event
            assert generated is not None
            reply = generated
        elif middle == "clarify":
            reply = replies.clarify(dm.persona, dm.retrieval, conversation, hits,
                                      dm.index.calibration)
        else:
            reply = replies.fallback(dm.persona, conversation, top)
    else:
        reply = replies.fallback(dm.persona, conversation, top)
    yield replace(reply, meta={**turn.meta, **reply.meta})


async def doubted(dm: DialogueManager, query: str, hit: FaqHit, turn: Turn) -> bool:
    """Whether learning doubts `hit` for this query (bot/learning/trust.py)."""
    learning = dm.learning
    if learning is None or not learning.doubts(hit.entry.id):
        return False
    known = (turn.vectors or {}).get(query)
    if known is None:
        loop = asyncio.get_running_loop()
        known = (await loop.run_in_executor(dm.executor, dm.index.embedder.embed, [query]))[0]
    return learning.doubted(hit.entry.id, known)


async def middle_generated(dm: DialogueManager, conversation: str, text: str,
                           hits: list[FaqHit], history: list[Message],
                           turn: Turn) -> AsyncIterator[Event]:
    """The generated band; a generation that fails before showing anything offers 'Did you
    mean' instead, its cause kept in the reply's meta."""
    try:
        grounds = [h for h in hits if dm.actions is None or dm.actions.get(h.entry.id) is None]
        async for event in generate(dm, conversation, text, grounds, history, turn):
            yield event
    except (ModelError, GenerationError) as exc:
        if turn.shown:
            raise
        # The customer still gets a useful turn; the cause is stored with it.
        log.warning("generation failed, offering 'Did you mean': %s", exc)
        yield replace(replies.clarify(dm.persona, dm.retrieval, conversation, hits,
                                      dm.index.calibration),
                      meta={"generation_error": str(exc)})
