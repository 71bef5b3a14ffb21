"""The JSON shapes of the web socket and REST API (docs/web.md), and client-frame parsing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bot.storage.models import CLIENT_ID_LENGTH, COMMENT_LENGTH
from bot.types import BotReply, Decision, Source, TranscriptItem

RATINGS = ("up", "down")
# The largest message id a client may name: the messages.id column is an Integer, 32 bits on
# PostgreSQL (SQLite's 64); anything larger cannot be a message, and would overflow the driver.
MAX_MESSAGE_ID = 2**31 - 1


class FrameError(Exception):
    """A client frame or request that cannot be accepted; `code` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ChatFrame:
    text: str
    client_id: str | None = None


@dataclass(frozen=True)
class FeedbackFrame:
    message_id: int
    rating: str
    comment: str | None = None


@dataclass(frozen=True)
class PingFrame:
    pong: bool  # True for a pong (the answer to the server's ping)


ClientFrame = ChatFrame | FeedbackFrame | PingFrame


def status_after(reply: BotReply) -> str:
    """Who answers the conversation once this reply is out."""
    return "handoff" if reply.decision in (Decision.HANDOFF, Decision.WAITING,
                                           Decision.HELD) else "bot"


def source(s: Source) -> dict[str, Any]:
    return {"id": s.id, "question": s.question, "score": s.score, "link": s.link}


def stored(reply: BotReply) -> bool:
    """Whether the turn was kept: False when storing it failed (the dialogue manager notes that
    in the reply's meta), so the reply has no message_id and cannot be rated."""
    return "storage_error" not in reply.meta


def reply_fields(reply: BotReply) -> dict[str, Any]:
    """What a client gets of a reply."""
    return {"message_id": reply.message_id, "text": reply.text,
            "decision": reply.decision.value, "confidence": round(reply.confidence, 4),
            "status": status_after(reply), "duplicate": bool(reply.meta.get("duplicate")),
            "stored": stored(reply),
            "sources": [source(s) for s in reply.sources],
            "suggestions": [source(s) for s in reply.suggestions]}


def reply_frame(reply: BotReply, client_id: str | None) -> dict[str, Any]:
    return {"type": "reply", "client_id": client_id, **reply_fields(reply)}


def history_item(item: TranscriptItem) -> dict[str, Any]:
    data: dict[str, Any] = {"role": item.role, "text": item.text,
                            "created_at": item.created_at.isoformat(),
                            "message_id": item.message_id, "client_id": item.client_id}
    if item.reply is not None:
        fields = reply_fields(item.reply)
        data.update({k: fields[k] for k in ("decision", "confidence", "sources",
                                            "suggestions")})
        data["feedback"] = item.feedback
    if item.role == "operator":
        data["name"] = item.name
    if item.held:  # stored for an operator: answered, although no bot reply follows
        data["held"] = True
    return data


def error_frame(code: str, message: str, client_id: str | None = None) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "client_id": client_id}


def check_encodable(field: str, value: str) -> str:
    """`value`, or FrameError if no text column can hold it: a lone surrogate such as \\udc00
    (JSON's \\u escapes allow it, UTF-8 cannot carry it) or a NUL (PostgreSQL refuses it)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FrameError("bad_frame", f"field '{field}' is not valid text: it holds a lone "
                         f"surrogate (\\u{ord(value[exc.start]):04x}) at character "
                         f"{exc.start}") from None
    if "\x00" in value:
        raise FrameError("bad_frame", f"field '{field}' is not valid text: it holds a NUL "
                         f"character (\\u0000) at character {value.index(chr(0))}")
    return value


def check_text(text: str, max_chars: int) -> str:
    """A message's text, or FrameError if it is empty, too long or not valid text."""
    check_encodable("text", text)
    if not text.strip():
        raise FrameError("empty_text", "text is empty: type a question")
    if len(text) > max_chars:
        raise FrameError("text_too_long", f"text has {len(text)} characters; "
                         f"the most is {max_chars}")
    return text


def check_client_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > CLIENT_ID_LENGTH:
        raise FrameError("bad_frame", f"field 'client_id' must be a string of 1 to "
                         f"{CLIENT_ID_LENGTH} characters")
    return check_encodable("client_id", value)


def check_feedback(message_id: Any, rating: Any, comment: Any) -> FeedbackFrame:
    if isinstance(message_id, bool) or not isinstance(message_id, int) \
            or not 1 <= message_id <= MAX_MESSAGE_ID:
        raise FrameError("bad_frame", f"field 'message_id' must be an integer from 1 to "
                         f"{MAX_MESSAGE_ID} (the message_id of a reply)")
    if rating not in RATINGS:
        raise FrameError("bad_frame", "field 'rating' must be 'up' or 'down'")
    if comment is not None and (not isinstance(comment, str) or len(comment) > COMMENT_LENGTH):
        raise FrameError("bad_frame", f"field 'comment' must be a string of at most "
                         f"{COMMENT_LENGTH} characters")
    if comment is not None:
        check_encodable("comment", comment)
    return FeedbackFrame(message_id, rating, comment)


def parse_frame(raw: str, max_chars: int) -> ClientFrame:
    """A client's text frame as a typed frame, or FrameError saying what is wrong."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise FrameError("invalid_json", f"frame is not valid JSON: {exc}") from None
    except RecursionError:  # "[[[[...": the parser gives up before the frame size limit does
        raise FrameError("invalid_json", "frame is not valid JSON: nested too deeply") \
            from None
    if not isinstance(data, dict):
        raise FrameError("bad_frame", "frame must be a JSON object with a 'type'")
    kind = data.get("type")
    if kind == "message":
        text = data.get("text")
        if not isinstance(text, str):
            raise FrameError("bad_frame", "field 'text' must be a string")
        client_id = check_client_id(data.get("client_id"))
        try:
            return ChatFrame(check_text(text, max_chars), client_id)
        except FrameError as exc:
            raise FrameError(exc.code, exc.message) from None
    if kind == "feedback":
        return check_feedback(data.get("message_id"), data.get("rating"), data.get("comment"))
    if kind in ("ping", "pong"):
        return PingFrame(pong=kind == "pong")
    if not isinstance(kind, str):
        raise FrameError("bad_frame", "frame has no string field 'type'")
    raise FrameError("unknown_type", f"unknown frame type {kind[:40]!r}; expected message, "
                     "feedback, ping or pong")
