"""A small Bot API server on 127.0.0.1 for the Telegram tests: it speaks the methods the bot
uses over real HTTP, so python-telegram-bot's own request path runs; a fake only at the wire."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.web_support import running

TOKEN = "123456789:AAHtestTOKENfor-the_fake-Bot-API-server"
BOT = {"id": 123456789, "is_bot": True, "first_name": "Kes", "username": "kestrel_help_bot",
       "can_join_groups": True, "can_read_all_group_messages": False,
       "supports_inline_queries": False}
_JSON_KEYS = {"reply_markup", "allowed_updates", "reply_parameters", "link_preview_options",
              "entities"}
_INT_KEYS = {"chat_id", "message_id", "offset", "limit", "timeout"}


@dataclass
class Call:
    """One request the bot made: the method, its decoded parameters, and when."""

    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class FakeBotApi:
    """Keeps a log of calls, serves queued updates to getUpdates (long polling), remembers the
    messages the bot sent and edited, and answers a queued error to a method when told to."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.lock = threading.Lock()
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self.failures: dict[str, list[dict[str, Any]]] = {}
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}  # (chat, id) -> message
        self.webhook: dict[str, Any] | None = None
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._query_ids = itertools.count(5_000_000_000_000_000_000)
        self.base_url = ""
        self.app = Starlette(routes=[Route("/bot{token}/{method}", self._api,
                                           methods=["GET", "POST"])])

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeBotApi]:
        """Serve on 127.0.0.1 (a thread of its own) until the block ends."""
        with running(self.app) as (address, _):  # type: ignore[arg-type]
            self.base_url = f"http://{address}/bot"
            yield self

    # --- what tests do ----------------------------------------------------------------------

    def fail_next(self, method: str, code: int, description: str,
                  **parameters: Any) -> None:
        """Answer the next call of `method` with this error (say 429 with retry_after)."""
        error = {"ok": False, "error_code": code, "description": description}
        if parameters:
            error["parameters"] = parameters
        with self.lock:
            self.failures.setdefault(method, []).append(error)

    def send(self, chat_id: int, user_id: int, text: str | None = None, *,
             group: bool = False, reply_to: int | None = None, edit_of: int | None = None,
             **content: Any) -> dict[str, Any]:
        """A customer's message (or other content, e.g. photo=[...]) as a queued update."""
        message: dict[str, Any] = {
            "message_id": edit_of or next(self._message_ids), "date": int(time.time()),
            "chat": _chat(chat_id, group), "from": _user(user_id), **content}
        if text is not None:
            message["text"] = text
            entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}] \
                if text.startswith("/") else []
            at = text.find("@" + BOT["username"])
            if at >= 0:
                entities.append({"type": "mention", "offset": at,
                                 "length": len(BOT["username"]) + 1})
            if entities:
                message["entities"] = entities
        if reply_to is not None:
            message["reply_to_message"] = self.messages[(chat_id, reply_to)]
        if edit_of is not None:
            message["edit_date"] = int(time.time()) + 1
        return self._queue({"edited_message" if edit_of else "message": message})

    def redeliver(self, update: dict[str, Any]) -> None:
        """Queue an update again, as Telegram does when it is not sure it was received."""
        with self.lock:
            self.updates.append({**update, "update_id": next(self._update_ids)})

    def press(self, chat_id: int, user_id: int, message_id: int, data: str) -> dict[str, Any]:
        """A customer pressing an inline button under one of the bot's messages."""
        with self.lock:
            message = dict(self.messages[(chat_id, message_id)])
        return self._queue({"callback_query": {
            "id": str(next(self._query_ids)), "from": _user(user_id), "message": message,
            "chat_instance": f"ci{chat_id}", "data": data}})

    def of(self, method: str) -> list[Call]:
        """The calls of one method so far."""
        with self.lock:
            return [c for c in self.calls if c.method == method]

    def bot_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """The bot's messages in a chat as they show now (after edits), oldest first."""
        with self.lock:
            return [m for (chat, _), m in sorted(self.messages.items())
                    if chat == chat_id and m["from"]["id"] == BOT["id"]]

    def texts(self, chat_id: int) -> list[str]:
        """The texts of the bot's messages in a chat, oldest first."""
        return [m["text"] for m in self.bot_messages(chat_id)]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 20.0,
                       what: str = "the condition") -> None:
        """Wait (asynchronously) until `condition()` holds; fail the test after `timeout`."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; calls: "
                                     f"{[c.method for c in self.calls][-30:]}")
            await asyncio.sleep(0.02)

    # --- the server -------------------------------------------------------------------------

    def _queue(self, update: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            update = {"update_id": next(self._update_ids), **update}
            self.updates.append(update)
            for key in ("message", "edited_message"):
                if key in update:
                    message = update[key]
                    self.messages[(message["chat"]["id"], message["message_id"])] = message
        return update

    async def _api(self, request: Request) -> JSONResponse:
        method = request.path_params["method"]
        params = await _params(request)
        with self.lock:
            self.calls.append(Call(method, params))
            failure = (self.failures.get(method) or [None]).pop(0) \
                if self.failures.get(method) else None
        if request.path_params["token"] != self.token:
            return JSONResponse({"ok": False, "error_code": 401,
                                 "description": "Unauthorized"}, status_code=401)
        if failure is not None:
            return JSONResponse(failure, status_code=failure["error_code"])
        if method == "getUpdates":
            return JSONResponse({"ok": True, "result": await self._get_updates(params)})
        try:
            result = self._handle(method, params)
        except _BadRequest as exc:
            return JSONResponse({"ok": False, "error_code": 400,
                                 "description": f"Bad Request: {exc}"}, status_code=400)
        return JSONResponse({"ok": True, "result": result})

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Long polling: confirm updates below the offset, wait up to `timeout` for new ones."""
        offset, timeout = params.get("offset", 0), params.get("timeout", 0)
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
                ready = self.updates[:params.get("limit", 100)]
            if ready or time.monotonic() >= deadline:
                return ready
            await asyncio.sleep(0.02)

    def _handle(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return BOT
        if method in ("setWebhook", "deleteWebhook"):
            with self.lock:
                self.webhook = params if method == "setWebhook" else None
            return True
        if method in ("sendChatAction", "answerCallbackQuery"):
            return True
        if method == "sendMessage":
            return self._send_message(params)
        if method == "editMessageText":
            return self._edit_message(params)
        raise _BadRequest(f"method {method} is not served by the test server")

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params["chat_id"]
        message: dict[str, Any] = {
            "message_id": next(self._message_ids), "date": int(time.time()),
            "chat": _chat(chat_id, chat_id < 0), "from": BOT, "text": params["text"]}
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        reply = (params.get("reply_parameters") or {}).get("message_id")
        with self.lock:
            if reply is not None and (chat_id, reply) in self.messages:
                message["reply_to_message"] = self.messages[(chat_id, reply)]
            self.messages[(chat_id, message["message_id"])] = message
        return message

    def _edit_message(self, params: dict[str, Any]) -> dict[str, Any]:
        key = (params["chat_id"], params["message_id"])
        with self.lock:
            if key not in self.messages:
                raise _BadRequest("message to edit not found")
            message = dict(self.messages[key])
            markup = params.get("reply_markup")
            if message["text"] == params["text"] and message.get("reply_markup") == markup:
                raise _BadRequest("message is not modified: specified new message content "
                                  "and reply markup are exactly the same")
            message.update(text=params["text"], edit_date=int(time.time()))
            if markup:
                message["reply_markup"] = markup
            else:
                message.pop("reply_markup", None)
            self.messages[key] = message
        return message


class _BadRequest(Exception):
    pass


async def _params(request: Request) -> dict[str, Any]:
    """The call's parameters: python-telegram-bot posts a form whose non-string values are JSON."""
    if request.headers.get("content-type", "").startswith("application/json"):
        return dict(await request.json())
    body = (await request.body()).decode()  # url-encoded: the bot sends no files here
    params: dict[str, Any] = dict(request.query_params)
    for key, text in parse_qsl(body, keep_blank_values=True):
        params[key] = json.loads(text) if key in _JSON_KEYS else \
            int(text) if key in _INT_KEYS else text
    return params


def _chat(chat_id: int, group: bool) -> dict[str, Any]:
    if group:
        return {"id": chat_id, "type": "group", "title": "Hikers"}
    return {"id": chat_id, "type": "private", "first_name": f"Customer {chat_id}"}


def _user(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": f"Customer {user_id}"}
