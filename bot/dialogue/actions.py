"""Actions in the dialogue (docs/actions.md): a search that finds an action starts it; the slots
it needs are taken from the message or asked for, one at a time; an action that changes
something asks for a yes first; then the call runs and its answer is the reply.

The action's state lives in the bot's reply (`meta["action"]`, bot/types.py ActionRecord), so
the next turn reads it back from the last bot message, on whichever worker it lands. A slot
value the redactor took out of the stored state is asked for again rather than guessed; after
the confirmation question (whose state would be redacted again) the action ends with the offer
of a human instead of a call without it.

While the bot asks: "cancel" / "never mind" leaves the action; a message that holds no value
and reads as a question of its own leaves it too and is searched as usual; a short answer with
no valid value gets the question again with what was wrong (`MAX_TRIES`, then a human is
offered). A failed call gets the action's `on_error` and the offer of a human (a fallback, so
that "yes" hands off); a 4xx the action names in `on_status` is its answer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping

from bot.actions.book import ActionBook, action_entry
from bot.actions.model import Action
from bot.actions.templates import MissingField, render_confirm, render_reply, render_status
from bot.dialogue.replies import source
from bot.dialogue.turn import Event
from bot.intents import AFFIRMATIVE, NEGATIVE
from bot.settings import PersonaSettings
from bot.storage import Message
from bot.types import (
    ActionRecord,
    BotReply,
    CallRecordMeta,
    Decision,
    Source,
    StatusEvent,
    UserMessage,
)
from retrieval.index import FaqHit

log = logging.getLogger(__name__)

CONFIRM = "confirm"  # `asking` while the bot waits for a yes before a change
CANCEL = frozenset({"cancel", "stop", "never mind", "nevermind", "forget it", "forget about it",
                    "quit", "exit", "abort", "cancel that", "no never mind", "leave it"})
MAX_TRIES = 2  # wrong answers to one question before the bot offers a human instead
# An answer "at" the question: short, or holding a digit (a mistyped number), not a sentence.
_ATTEMPT_WORDS = 3
_DIGIT = re.compile(r"\d")


def record_of(last: Message | None, book: ActionBook | None) -> tuple[Action, ActionRecord] | None:
    """The action the bot's last reply was asking for, if it still exists."""
    if book is None or last is None or last.decision != Decision.ASK.value:
        return None
    record = (last.meta or {}).get("action")
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return None
    action = book.get(record["id"])
    if action is None:
        return None
    slots = record.get("slots") if isinstance(record.get("slots"), dict) else {}
    # Only values the slot still accepts: one the redactor replaced is asked for again.
    kept = {name: value for name, value in (slots or {}).items()
            if isinstance(value, str) and _slot_accepts(action, name, value)}
    tries = record.get("tries")
    return action, ActionRecord(id=action.id, slots=kept, asking=str(record.get("asking", "")),
                                tries=tries if isinstance(tries, int) else 0)


def _slot_accepts(action: Action, name: str, value: str) -> bool:
    try:
        return action.slot(name).find(value) == value
    except KeyError:
        return False


def attempt(plain: str) -> bool:
    """Whether a message that holds no valid value still reads as an answer to the question
    (a short one, or one with a digit) rather than a new question."""
    return len(plain.split()) <= _ATTEMPT_WORDS or bool(_DIGIT.search(plain))


def resume(book: ActionBook, persona: PersonaSettings, message: UserMessage, text: str,
                 plain: str, action: Action, record: ActionRecord
                 ) -> AsyncIterator[Event] | None:
    """The next step of the action the bot asked for, or None when the message leaves it for a
    search of its own (a new question)."""
    conversation = message.conversation_id
    if plain in CANCEL or plain in NEGATIVE:  # "no" to a question or to "Cancel it?"
        return _single(_ended(persona, conversation, action, record, "cancelled",
                              persona.render(persona.action_cancelled_text)))
    if record.get("asking") == CONFIRM:
        if plain in AFFIRMATIVE:
            if any(slot.name not in record["slots"] for slot in action.slots):
                # The redactor took a value out of the stored state after the question: asking
                # again would only store it redacted again, and calling without it would fail.
                log.warning("action %s: a slot value was redacted before the yes", action.id)
                return _single(_ended(persona, conversation, action, record, "lost_slot",
                                      persona.render(persona.action_offer_text),
                                      Decision.FALLBACK))
            return perform(book, persona, conversation, action, record["slots"])
        if not attempt(plain):
            return None  # a question of its own
        return _again(persona, conversation, action, record, CONFIRM,
                      render_confirm(action, record["slots"]) or "")
    asking = record.get("asking", "")
    slots = dict(record["slots"])
    found = fill(action, text, slots)
    if asking and asking not in found:
        if not attempt(plain):
            return None
        return _again(persona, conversation, action, ActionRecord(
            id=action.id, slots={**slots, **found}, tries=record.get("tries", 0)), asking,
            action.slot(asking).invalid_text)
    return proceed(book, persona, conversation, action, {**slots, **found})


def _again(persona: PersonaSettings, conversation: str, action: Action, record: ActionRecord,
           asking: str, text: str) -> AsyncIterator[Event]:
    """The question again after an answer that was not one (`MAX_TRIES` times, then the offer
    of a human)."""
    tries = record.get("tries", 0) + 1
    if tries > MAX_TRIES:
        return _single(_ended(persona, conversation, action, record, "gave_up",
                              persona.render(persona.action_gave_up_text), Decision.FALLBACK))
    return _single(ask(conversation, action, dict(record["slots"]), asking, tries, text))


def fill(action: Action, text: str, known: Mapping[str, str]) -> dict[str, str]:
    """The values of the action's slots not known yet that the message holds."""
    found = {}
    for slot in action.slots:
        if slot.name not in known:
            value = slot.find(text)
            if value is not None:
                found[slot.name] = value
    return found


def start(book: ActionBook, persona: PersonaSettings, conversation: str, action: Action,
          text: str, context: str = "") -> AsyncIterator[Event]:
    """A search found the action: take what the message holds, then what `context` (the
    previous question a follow-up was searched with) holds for slots still missing, and go
    on. The message comes first: in "has KO-222222 shipped?" then "and KO-123456?" the second
    turn is about KO-123456."""
    slots = fill(action, text, {})
    slots.update(fill(action, context, slots))
    return proceed(book, persona, conversation, action, slots)


def proceed(book: ActionBook, persona: PersonaSettings, conversation: str, action: Action,
            slots: dict[str, str]) -> AsyncIterator[Event]:
    """Ask for the first slot still missing, else for a yes before a change, else call."""
    for slot in action.slots:
        if slot.name not in slots:
            return _single(ask(conversation, action, slots, slot.name, 0, slot.ask))
    question = render_confirm(action, slots)
    if question is not None:
        return _single(ask(conversation, action, slots, CONFIRM, 0, question))
    return perform(book, persona, conversation, action, slots)


def ask(conversation: str, action: Action, slots: dict[str, str], asking: str, tries: int,
        text: str) -> BotReply:
    """The bot asks for a slot (or a yes); the state goes with the reply."""
    return BotReply(text, Decision.ASK, conversation, sources=[_source(action)],
                    confidence=1.0, meta={"action": ActionRecord(
                        id=action.id, slots=dict(slots), asking=asking, tries=tries)})


async def perform(book: ActionBook, persona: PersonaSettings, conversation: str,
                  action: Action, slots: dict[str, str]) -> AsyncIterator[Event]:
    """Say that the bot looks it up, make the call, and reply from its answer."""
    yield StatusEvent("looking_up", persona.render(persona.looking_up_text))
    result = await book.caller.call(action, slots)
    call = CallRecordMeta(status=result.status, outcome=result.error or "ok",
                          ms=round(result.duration_ms, 1))
    record = ActionRecord(id=action.id, slots=dict(slots), call=call)
    text: str | None = None
    if result.ok:
        try:
            text = render_reply(action, result.data, slots)
        except MissingField as exc:
            log.warning("action %s: the answer has no field %s", action.id, exc.name)
            call["outcome"] = "missing_field"
    elif result.status is not None:
        text = render_status(action, result.status, slots)
    if text is None:
        if result.detail:
            log.warning("action %s failed: %s", action.id, result.detail)
        yield _ended(persona, conversation, action, record, "failed",
                     f"{action.on_error} {persona.render(persona.action_offer_text)}",
                     Decision.FALLBACK)
        return
    record["ended"] = "answered"
    yield BotReply(text, Decision.ACTION, conversation, sources=[_source(action)],
                   confidence=1.0, meta={"action": record})


def _ended(persona: PersonaSettings, conversation: str, action: Action, record: ActionRecord,
           how: str, text: str, decision: Decision = Decision.ANSWER) -> BotReply:
    ended = ActionRecord(id=action.id, slots=dict(record["slots"]), ended=how)
    if "call" in record:
        ended["call"] = record["call"]
    return BotReply(text, decision, conversation, sources=[_source(action)], confidence=1.0,
                    meta={"action": ended})


def _source(action: Action) -> Source:
    return source(FaqHit(action_entry(action), 1.0, action.questions[0]))


async def _single(reply: BotReply) -> AsyncIterator[Event]:
    yield reply
