"""The operator inbox API (`/operator/api/`): log in, list handed-off conversations, read
one with the bot's reasoning, claim it, reply, give it back to the bot, close it; correct a bot
answer; teach the FAQ a new entry or phrasing (bot/operators/faq.py).

Every route but login needs the session cookie (401 otherwise). The cookie is SameSite=Strict
and HttpOnly; every POST is refused when a browser says another page sent it (Origin,
Sec-Fetch-Site: 403) and when its body is not JSON (415), so neither another site nor a page on
another port or subdomain of this one can forge an operator's requests. Each change is logged
in operator_actions with its operator.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

# The shape of a source in the web protocol (that module imports nothing of the web app)
from bot.channels.web.protocol import source
from bot.channels.web.security import foreign_request
from bot.channels.web.state import WebState, client_ip
from bot.channels.web.unavailable import Unavailable, unavailable
from bot.errors import InputError, StorageError
from bot.learning import UseLearning
from bot.learning.answers import OperatorAnswers
from bot.operators.accounts import MAX_PASSWORD, verify_password
from bot.operators.auth import COOKIE, COOKIE_PATH, LoginThrottle, SessionSigner
from bot.operators.delivery import ChatDelivery, to_customer, typing_to_customer
from bot.operators.faq import MAX_ANSWER_CHARS, MAX_QUESTION_CHARS, Addition, FaqLearning
from bot.operators.store import ConflictError, InboxItem, NotFoundError, OperatorStore
from bot.push import operator_frame, status_frame, typing_frame
from bot.storage.models import Message
from bot.types import ConversationStatus

log = logging.getLogger(__name__)
_READS = ("GET", "HEAD", "OPTIONS")


async def own_page_only(request: Request) -> None:
    """Refuses a change that another page sent (403) or whose body is not JSON (415).

    SameSite=Strict still sends the cookie from a same-site page (another port of this host, a
    sibling subdomain): what tells the inbox's own requests apart is the browser's Origin and
    Sec-Fetch-Site, and that an HTML form cannot send JSON.
    """
    if request.method in _READS:
        return
    foreign = foreign_request(request.headers)
    if foreign is not None:
        log.warning("operator API: refused %s %s from %s (%s)", request.method,
                    request.url.path, foreign, client_ip(request))
        raise HTTPException(403, f"{foreign} may not change the operator inbox: use the "
                            "inbox page at /operator")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    has_body = request.headers.get("content-length", "0") != "0" \
        or "transfer-encoding" in request.headers
    if (kind or has_body) and kind != "application/json":
        raise HTTPException(415, "send the body as JSON (Content-Type: application/json)")


router = APIRouter(prefix="/operator/api", tags=["operators"],
                   dependencies=[Depends(own_page_only)])
WRONG_LOGIN = "wrong name or password"  # the one message, whichever of the two was wrong
MAX_REPLY_CHARS = 4000


@dataclass
class OperatorContext:
    """What the operator routes share; built at start-up as `app.state.operators`."""

    store: OperatorStore
    signer: SessionSigner
    throttle: LoginThrottle
    web: WebState
    learning: FaqLearning  # FAQ additions
    telegram: ChatDelivery | None = None  # replies to Telegram customers
    use: UseLearning | None = None  # learning from use (bot/channels/web/learning.py)
    answers: OperatorAnswers | None = None  # operators' replies that are FAQ answers teach


class LoginRequest(BaseModel):
    name: str = Field(max_length=64)
    password: str = Field(max_length=MAX_PASSWORD)


class ReplyRequest(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_REPLY_CHARS,
                      description="The operator's message to the customer.")

    def checked(self) -> str:
        """The text; 422 "text is empty" when it is only spaces."""
        if not self.text.strip():
            raise HTTPException(422, "text is empty")
        return self.text


class FaqRequest(BaseModel):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS,
                          description="How customers ask it (often the customer's message).")
    entry_id: str | None = Field(None, max_length=128, description="Without answer: the "
                                 "existing entry this is one more phrasing of. With answer: "
                                 "the new entry's id (made from the question when empty).")
    answer: str | None = Field(None, max_length=MAX_ANSWER_CHARS, description="Set: a new "
                               "entry with this answer (often the operator's reply).")
    out_of_scope: bool = Field(False, description="True: a question no entry answers (not "
                               "our topic); the classifier scoring learns it as out of scope "
                               "and the bot stops answering it from the FAQ. Takes neither "
                               "entry_id nor answer.")
    message_id: int | None = Field(None, description="The message it was taken from.")


def _context(request: Request) -> OperatorContext:
    context: OperatorContext = request.app.state.operators
    return context


async def current_operator(request: Request) -> str:
    """The logged-in operator's name; 401 without a valid session of an existing account
    (one that has not logged out since the cookie was issued)."""
    context = _context(request)
    session = context.signer.session(request.cookies.get(COOKIE))
    try:
        account = None if session is None else await context.store.account(session[0])
    except StorageError as exc:
        raise _unavailable(exc) from exc
    if session is None or account is None or (
            account.sessions_after is not None
            and session[1] < account.sessions_after.timestamp()):
        raise HTTPException(401, "log in first: POST /operator/api/login")
    return session[0]


def _unavailable(exc: StorageError) -> Unavailable:
    return unavailable("the database cannot be reached right now", exc, log)


@router.post("/login", summary="Log in: sets the session cookie")
async def login(body: LoginRequest, request: Request, response: Response) -> dict[str, Any]:
    context = _context(request)
    settings = context.web.settings.operators
    ip = client_ip(request)
    # Throttled per (name, address) and per address, whether the name has an account or not:
    # the same answers and the same work for both, and no lockout of a name from elsewhere.
    # The counts are in the database: every worker's, and they outlive restarts.
    throttle, ledger = context.throttle, context.store
    try:
        wait = context.web.limit(ip, None) or await throttle.shared_attempt(ledger, body.name, ip)
        if wait:
            seconds = math.ceil(wait)  # whole seconds, never "wait 0 s"
            raise HTTPException(429, f"too many attempts: wait {seconds} s",
                                headers={"Retry-After": str(seconds)})
        account = await context.store.account(body.name)
        # argon2 takes tens of milliseconds of CPU: off the event loop, which serves the chats
        stored = None if account is None else account.password_hash
        if not await asyncio.to_thread(verify_password, stored, body.password):
            await throttle.shared_failed(ledger, body.name, ip)
            log.warning("operator login failed for %r from %s", body.name[:64], ip)
            raise HTTPException(401, WRONG_LOGIN)
        await throttle.shared_succeeded(ledger, body.name, ip)
        await context.store.log(body.name, "login")
    except StorageError as exc:
        raise _unavailable(exc) from exc
    value, expires = context.signer.issue(body.name)
    response.set_cookie(COOKIE, value, max_age=int(context.signer.seconds), path=COOKIE_PATH,
                        secure=settings.secure_cookie, httponly=True, samesite="strict")
    return {"name": body.name, "expires_at": datetime.fromtimestamp(expires).astimezone()
            .isoformat()}


@router.post("/logout", summary="Log out: ends this operator's sessions, on every device")
async def logout(request: Request, response: Response,
                 operator: str = Depends(current_operator)) -> dict[str, Any]:
    context = _context(request)
    try:
        await context.store.end_sessions(operator)
    except StorageError as exc:
        raise _unavailable(exc) from exc
    response.delete_cookie(COOKIE, path=COOKIE_PATH,
                           secure=context.web.settings.operators.secure_cookie,
                           httponly=True, samesite="strict")
    return {"name": operator, "logged_out": True}


@router.get("/me", summary="Who is logged in")
async def me(operator: str = Depends(current_operator)) -> dict[str, Any]:
    return {"name": operator}


@router.get("/conversations", summary="Conversations waiting for a human, and those claimed")
async def conversations(request: Request,
                        operator: str = Depends(current_operator)) -> dict[str, Any]:
    try:
        items = await _context(request).store.inbox()
    except StorageError as exc:
        raise _unavailable(exc) from exc
    return {"waiting": [_item(i) for i in items if i.claimed_by is None],
            "claimed": [_item(i) for i in items if i.claimed_by is not None]}


@router.get("/conversations/{conversation_id}",
            summary="A conversation's messages, with the bot's decisions, sources and scores")
async def conversation(conversation_id: str, request: Request,
                       operator: str = Depends(current_operator)) -> dict[str, Any]:
    context = _context(request)
    try:
        row = await context.store.conversation(conversation_id)
        rows = await context.store.conversations.transcript(conversation_id)
        actions = await context.store.actions(conversation_id)
        # What the customer wrote, before redaction: for the operator holding the conversation
        # only, and only until storage.original_text_hours have passed (docs/privacy.md).
        written = await context.store.conversations.originals(conversation_id) \
            if row.claimed_by == operator and row.status == ConversationStatus.HANDOFF.value \
            else {}
    except (NotFoundError, InputError):
        raise HTTPException(404, f"no conversation {conversation_id[:128]!r}") from None
    except StorageError as exc:
        raise _unavailable(exc) from exc
    return {"conversation": {"id": row.id, "channel": row.channel, "user_id": row.user_id,
                             "status": row.status, "created_at": _iso(row.created_at),
                             "status_changed_at": _iso(row.status_changed_at),
                             "claimed_by": row.claimed_by, "claimed_at": _iso(row.claimed_at)},
            "messages": [_message(context, m, rating, written.get(m.id)) for m, rating in rows],
            "actions": [{"operator": a.operator, "action": a.action,
                         "message_id": a.message_id, "created_at": _iso(a.created_at)}
                        for a in actions]}


@router.post("/conversations/{conversation_id}/claim",
             summary="Take a waiting conversation: the bot stops answering it")
async def claim(conversation_id: str, request: Request,
                operator: str = Depends(current_operator)) -> dict[str, Any]:
    await _change(_context(request).store.claim(conversation_id, operator))
    return {"conversation_id": conversation_id, "status": "handoff", "claimed_by": operator}


@router.post("/conversations/{conversation_id}/reply",
             summary="Send the customer a message (stored; live on an open web chat)")
async def reply(conversation_id: str, body: ReplyRequest, request: Request,
                operator: str = Depends(current_operator)) -> dict[str, Any]:
    context = _context(request)
    message = await _change(context.store.reply(conversation_id, operator, body.checked()))
    created = _iso(message.created_at) or ""
    delivered = await to_customer(
        context.web, context.telegram, conversation_id,
        operator_frame(message.text, operator, message.id, created), f"{operator}: {message.text}")
    return {"message_id": message.id, "created_at": created, **delivered,
            "learnt": await _learn_from(context, conversation_id, operator, message)}


async def _learn_from(context: OperatorContext, conversation_id: str, operator: str,
                      message: Message) -> dict[str, str] | None:
    """A reply that is an FAQ entry's answer teaches the customer's unanswered question
    (bot/learning/answers.py); after the delivery, so the customer never waits for it."""
    if context.answers is None:
        return None
    taught = await context.answers.taught(conversation_id, operator, message.text, message.id)
    if taught is None:
        return None
    try:
        await context.store.log(operator, "learn_answer", conversation_id)
    except StorageError as exc:
        log.warning("operator action learn_answer not logged: %s", exc)
    return {"entry_id": taught[0], "wording": taught[1]}


@router.post("/conversations/{conversation_id}/typing",
             summary="Show the customer that you are writing (call every few seconds)")
async def typing(conversation_id: str, request: Request,
                 operator: str = Depends(current_operator)) -> dict[str, Any]:
    context = _context(request)
    row = await _change(context.store.conversation(conversation_id))
    if row.status != ConversationStatus.HANDOFF.value or row.claimed_by != operator:
        raise HTTPException(409, f"claim conversation {conversation_id!r} before writing")
    await typing_to_customer(context.web, context.telegram, conversation_id,
                             typing_frame(operator))
    return {"conversation_id": conversation_id, "typing": operator}


@router.post("/messages/{message_id}/correction",
             summary="Mark a bot answer wrong and give the right one (used by export)")
async def correct(message_id: int, body: ReplyRequest, request: Request,
                  operator: str = Depends(current_operator)) -> dict[str, Any]:
    message = await _change(_context(request).store.correct(message_id, operator,
                                                            body.checked()))
    return {"message_id": message.id, "conversation_id": message.conversation_id,
            "correction": message.meta["correction"]}


@router.get("/faq", summary="The FAQ's entries (to pick one) and the additions made here")
async def faq(request: Request, operator: str = Depends(current_operator)) -> dict[str, Any]:
    learning = _context(request).learning
    try:
        await learning.sync()
        additions = await learning.additions()
    except StorageError as exc:
        raise _unavailable(exc) from exc
    return {"entries": [{"id": e.id, "question": e.question, "phrasings": len(e.questions)}
                        for e in learning.index.live_entries()],
            "additions": [_addition(a) for a in additions]}


@router.post("/faq", summary="Add an FAQ entry or a phrasing of one (the bot answers it next), "
             "or a question no entry answers (the bot stops answering it from the FAQ)")
async def add_faq(body: FaqRequest, request: Request,
                  operator: str = Depends(current_operator)) -> dict[str, Any]:
    context = _context(request)
    conversation_id = None
    if body.message_id is not None:
        try:
            conversation_id = (await context.store.message(body.message_id)).conversation_id
        except NotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        except StorageError as exc:
            raise _unavailable(exc) from exc
    try:
        added = await _change(context.learning.add(
            operator, body.question, entry_id=body.entry_id or None, answer=body.answer,
            out_of_scope=body.out_of_scope, conversation_id=conversation_id,
            message_id=body.message_id))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return _addition(added)


@router.post("/faq/{addition_id}/remove",
             summary="Take an addition back: the bot stops answering from it")
async def remove_faq(addition_id: int, request: Request,
                     operator: str = Depends(current_operator)) -> dict[str, Any]:
    return _addition(await _change(_context(request).learning.remove(addition_id, operator)))


@router.post("/conversations/{conversation_id}/release",
             summary="Give the conversation back to the bot")
async def release(conversation_id: str, request: Request,
                  operator: str = Depends(current_operator)) -> dict[str, Any]:
    return await _finish(request, conversation_id, operator, ConversationStatus.BOT)


@router.post("/conversations/{conversation_id}/close",
             summary="Close the conversation: done (the bot answers anything new)")
async def close(conversation_id: str, request: Request,
                operator: str = Depends(current_operator)) -> dict[str, Any]:
    return await _finish(request, conversation_id, operator, ConversationStatus.CLOSED)


async def _finish(request: Request, conversation_id: str, operator: str,
                  status: ConversationStatus) -> dict[str, Any]:
    context = _context(request)
    await _change(context.store.finish(conversation_id, operator, status))
    await context.web.customers.push(conversation_id, status_frame(status.value))
    return {"conversation_id": conversation_id, "status": status.value}


async def _change(change: Any) -> Any:
    """Await a store change, its refusals as HTTP errors."""
    try:
        return await change
    except (NotFoundError, InputError) as exc:
        raise HTTPException(404, str(exc)) from None
    except ConflictError as exc:
        raise HTTPException(409, str(exc)) from None
    except StorageError as exc:
        raise _unavailable(exc) from exc


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _addition(a: Addition) -> dict[str, Any]:
    return {"id": a.id, "kind": a.kind, "entry_id": a.entry_id, "question": a.question,
            "answer": a.answer, "operator": a.operator, "conversation_id": a.conversation_id,
            "message_id": a.message_id, "created_at": _iso(a.created_at),
            "removed_at": _iso(a.removed_at), "removed_by": a.removed_by}


def _item(item: InboxItem) -> dict[str, Any]:
    return {"conversation_id": item.conversation_id, "channel": item.channel,
            "waiting_since": _iso(item.waiting_since), "claimed_by": item.claimed_by,
            "claimed_at": _iso(item.claimed_at),
            "last_customer_message": None if item.last_text is None else
            {"text": item.last_text, "created_at": _iso(item.last_at)}}


def _message(context: OperatorContext, m: Message, rating: str | None,
             original: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"id": m.id, "role": m.role, "text": m.text,
                            "created_at": _iso(m.created_at), "client_id": m.client_id,
                            "verdicts": m.verdicts, "meta": m.meta or {}}
    if original is not None and m.role == "user":
        data["original"] = original
    if m.role == "bot":
        used = context.web.manager.stored_reply(m)
        data.update({"decision": m.decision, "confidence": m.confidence,
                     "latency_ms": m.latency_ms, "feedback": rating,
                     "sources": [source(s) for s in used.sources],
                     "suggestions": [source(s) for s in used.suggestions]})
    elif m.role == "operator":
        data["name"] = (m.meta or {}).get("operator")
    return data
