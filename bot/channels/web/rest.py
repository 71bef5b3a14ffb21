"""REST: one turn per request (`POST /v1/chat`, optionally as server-sent events), a
conversation's messages, and feedback. Every call needs the conversation's token."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Literal

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, field_validator

from bot.channels.web.protocol import (
    MAX_MESSAGE_ID,
    FrameError,
    check_encodable,
    check_text,
    error_frame,
    history_item,
    reply_fields,
)
from bot.channels.web.service import ShuttingDownError
from bot.channels.web.state import WebState, client_ip
from bot.channels.web.unavailable import unavailable
from bot.errors import StorageError
from bot.storage.models import CLIENT_ID_LENGTH, COMMENT_LENGTH
from bot.types import BotReply, StatusEvent, TextEvent, UserMessage

log = logging.getLogger(__name__)

class _CheckedRoute(APIRoute):
    """A route whose 422 names the wrong fields without echoing their values: a value that
    UTF-8 cannot carry (a lone surrogate) would fail the error response itself."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return JSONResponse({"detail": [
                    {"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "")),
                     "type": str(error.get("type", ""))} for error in exc.errors()]},
                    status_code=422)

        return checked


router = APIRouter(prefix="/v1", tags=["chat"], route_class=_CheckedRoute)


def _encodable(value: str | None, info: Any) -> str | None:
    """A text field's value, or ValueError if UTF-8 cannot carry it (a lone surrogate)."""
    if value is not None:
        try:
            check_encodable(info.field_name, value)
        except FrameError as exc:
            raise ValueError(exc.message) from None
    return value


class ChatRequest(BaseModel):
    """One customer message."""

    text: str = Field(description="The customer's message.")
    conversation_id: str | None = Field(None, max_length=128, description="Omit (with token) "
                                        "to start a new conversation.")
    token: str | None = Field(None, max_length=128, description="The conversation's token.")
    client_id: str | None = Field(None, min_length=1, max_length=CLIENT_ID_LENGTH,
                                  description="Your id for the message: a re-sent message "
                                  "with the same id is answered once.")
    stream: bool = Field(False, description="Answer as server-sent events.")

    _text_fields = field_validator("text", "conversation_id", "token", "client_id")(_encodable)


class FeedbackRequest(BaseModel):
    """A rating of one bot message."""

    conversation_id: str = Field(max_length=128)
    token: str = Field(max_length=128)
    message_id: int = Field(ge=1, le=MAX_MESSAGE_ID)
    rating: Literal["up", "down"]
    comment: str | None = Field(None, max_length=COMMENT_LENGTH)

    _text_fields = field_validator("conversation_id", "token", "comment")(_encodable)


def _state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def _limit(state: WebState, request: Request) -> None:
    """Spend one request of the client IP's budget (429 when spent). Before the token is
    checked, so that guessing tokens costs the same budget as using one."""
    _refuse_after(state.limit(client_ip(request), None))


def _source(state: WebState, request: Request) -> str:
    """Who the customer is for learning: the digest of the address the rate limit counts, so
    that the socket and REST give one customer one voice (bot/channels/web/security.py)."""
    return state.tokens.client_digest(client_ip(request))


def _limit_conversation(state: WebState, conversation_id: str) -> None:
    """Spend one message of the conversation's budget (429 when spent)."""
    _refuse_after(state.limit_conversation(conversation_id))


def _refuse_after(wait: float) -> None:
    if wait:
        raise HTTPException(429, f"too many requests: retry in {wait:.1f} s",
                            headers={"Retry-After": str(max(1, round(wait)))})


def _open(state: WebState, conversation_id: str | None, token: str | None) -> tuple[str, str]:
    """The conversation the request may use: its own (token checked) or a new one."""
    if conversation_id is None and token is None:
        return state.tokens.new()
    if not conversation_id or not token or not state.tokens.verify(conversation_id, token):
        state.metrics.errors.labels("bad_token").inc()
        raise HTTPException(403, "conversation_id and token do not match")
    return conversation_id, token


@router.post("/chat", summary="Send a message; get the reply (or a stream of it)")
async def chat(body: ChatRequest, request: Request) -> Any:
    state = _state(request)
    if state.service.closing:
        raise HTTPException(503, "the server is shutting down")
    _limit(state, request)
    conversation_id, token = _open(state, body.conversation_id, body.token)
    _limit_conversation(state, conversation_id)
    try:
        text = check_text(body.text, state.settings.dialogue.max_input_chars)
    except FrameError as exc:
        state.metrics.errors.labels(exc.code).inc()
        raise HTTPException(422, f"text: {exc.message}") from None
    message = UserMessage(text, conversation_id, channel="rest", user_id="rest",
                          client_id=body.client_id, source=_source(state, request))
    if body.stream:
        return StreamingResponse(_events(state, message, token), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})
    reply: BotReply | None = None
    try:
        async for event in state.service.turn(message):
            if isinstance(event, BotReply):
                reply = event
    except ShuttingDownError:
        raise HTTPException(503, "the server is shutting down") from None
    assert reply is not None
    return {"conversation_id": conversation_id, "token": token, "reply": reply_fields(reply)}


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _events(state: WebState, message: UserMessage, token: str) -> AsyncIterator[str]:
    """hello, token..., reply (or error). A client that leaves ends the turn (it is stored)."""
    yield _sse("hello", {"conversation_id": message.conversation_id, "token": token})
    try:
        async with contextlib.aclosing(state.service.turn(message)) as events:
            async for event in events:
                if isinstance(event, TextEvent):
                    yield _sse("token", {"text": event.text})
                elif isinstance(event, StatusEvent):  # an action's call runs
                    yield _sse("working", {"kind": event.kind, "text": event.text})
                elif isinstance(event, BotReply):
                    yield _sse("reply", {"client_id": message.client_id,
                                         **reply_fields(event)})
    except ShuttingDownError:
        yield _sse("error", error_frame("unavailable", "the server is shutting down"))


@router.get("/conversations/{conversation_id}", summary="A conversation's messages")
async def conversation(conversation_id: str, request: Request,
                       x_conversation_token: str = Header(
                           description="The conversation's token.")) -> Any:
    state = _state(request)
    _limit(state, request)
    _open(state, conversation_id, x_conversation_token)
    try:
        items = await state.manager.transcript(conversation_id)
        status = await state.manager.status(conversation_id)
    except StorageError as exc:
        raise unavailable("the conversation cannot be read right now", exc, log) from None
    return {"conversation_id": conversation_id, "status": status.value,
            "messages": [history_item(item) for item in items]}


@router.post("/feedback", summary="Rate a bot message (thumbs up / down)")
async def feedback(body: FeedbackRequest, request: Request) -> Any:
    state = _state(request)
    _limit(state, request)  # the IP's budget only, as on the web socket
    _open(state, body.conversation_id, body.token)
    try:
        stored = await state.manager.feedback(body.conversation_id, body.message_id,
                                              body.rating, body.comment,
                                              source=_source(state, request), channel="rest")
    except StorageError as exc:
        raise unavailable("feedback cannot be stored right now", exc, log) from None
    if not stored:
        raise HTTPException(404, f"message {body.message_id} is not a bot message of this "
                            "conversation")
    state.metrics.feedback.labels(body.rating).inc()
    return JSONResponse({"message_id": body.message_id, "rating": body.rating})
