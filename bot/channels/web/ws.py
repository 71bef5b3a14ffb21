"""The chat web socket (`/ws`): hello, streamed verified text, replies, feedback, heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from bot.channels.web.protocol import (
    ChatFrame,
    FeedbackFrame,
    FrameError,
    PingFrame,
    check_client_id,
    error_frame,
    history_item,
    parse_frame,
    reply_frame,
)
from bot.channels.web.security import same_origin
from bot.channels.web.service import ShuttingDownError
from bot.channels.web.state import WebState, client_ip
from bot.channels.web.unavailable import unavailable
from bot.errors import InputError, StorageError
from bot.types import BotReply, ConversationStatus, StatusEvent, TextEvent, UserMessage

log = logging.getLogger(__name__)

BAD_TOKEN_CLOSE = 4403
POLICY_CLOSE = 1008  # a client that does not read its frames, or floods past its rate limit
SERVICE_RESTART = 1012  # uvicorn closes sockets with this when the server shuts down
_MAX_QUEUED = 20  # messages a connection may have waiting behind the running turn
_MAX_REFUSED = 20  # frames refused by the rate limit in a row before the socket is closed
_CLOSE_SECONDS = 2.0  # how long closing a socket may take (its client may not be reading)


def _dumps(frame: dict[str, Any]) -> str:
    """A frame as JSON text; \\u escapes for anything UTF-8 cannot carry (a lone surrogate)."""
    text = json.dumps(frame, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(frame)
    return text


def _client_id_of(raw: str | None) -> str | None:
    """The valid client_id of a refused frame, if it has one, to echo in the error."""
    with contextlib.suppress(Exception):  # anything at all: the frame was refused already
        data = json.loads(raw or "")
        return check_client_id(data.get("client_id")) if isinstance(data, dict) else None
    return None


class ChatConnection:
    """One customer's socket: a reader (frames in), a turn worker (answers, in order) and a
    heartbeat, sharing one send lock."""

    def __init__(self, socket: WebSocket, state: WebState, conversation_id: str) -> None:
        self.socket = socket
        self.state = state
        self.conversation_id = conversation_id
        self.ip = client_ip(socket)
        self.source = state.tokens.client_digest(self.ip)  # the customer, for learning
        self.queue: asyncio.Queue[ChatFrame] = asyncio.Queue(_MAX_QUEUED)
        self._send_lock = asyncio.Lock()
        self._heard = asyncio.Event()  # any frame from the client since the last ping
        self._dropped = asyncio.Event()  # the server gave up on the client: stop reading
        self._refused = 0  # frames refused by the rate limit since the last one accepted
        self._drop_code = POLICY_CLOSE
        self.gone = False  # a send failed: the client cannot be reached any more

    async def send(self, frame: dict[str, Any]) -> None:
        """Send a frame; once the client has gone, frames are dropped, never raised about.

        A send that takes longer than web.send_timeout_seconds (a client that stopped reading)
        drops the client: the socket is closed and every later frame is dropped.
        Whether a turn goes on without its client is `run`'s decision, not the sender's: a
        customer who left stops it, a server restart lets it finish and be stored.
        """
        if self.gone:
            return
        text = _dumps(frame)
        timeout = self.state.settings.web.send_timeout_seconds
        async with self._send_lock:
            if self.gone:
                return
            try:
                await asyncio.wait_for(self.socket.send_text(text), timeout)
            except asyncio.TimeoutError:
                log.warning("web socket of %s dropped: the client read nothing for %.0f s",
                            self.conversation_id, timeout)
                self.drop(POLICY_CLOSE, "send_timeout")
            except (WebSocketDisconnect, OSError, RuntimeError):
                self.gone = True

    def drop(self, code: int, reason: str | None = None) -> None:
        """Give up on the client: no more frames, the reader stops and `run` closes the socket
        with `code` (counted in the errors metric as `reason`, if given)."""
        if self._dropped.is_set():
            return
        if reason is not None:
            self.state.metrics.errors.labels(reason).inc()
        self._drop_code = code
        self.gone = True
        self._dropped.set()

    async def refuse(self, code: str, message: str, client_id: str | None = None) -> None:
        self.state.metrics.errors.labels(code).inc()
        await self.send(error_frame(code, message, client_id))

    async def run(self) -> None:
        worker = asyncio.create_task(self._answer(), name=f"ws-turns-{self.conversation_id}")
        heartbeat = asyncio.create_task(self._heartbeat(), name="ws-heartbeat")
        reader = asyncio.create_task(self._read(), name="ws-reader")
        dropped = asyncio.create_task(self._dropped.wait())
        code = 1000
        try:
            await asyncio.wait({reader, dropped}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                code = reader.result()
            else:  # the server gave up on the client (see `drop`)
                code = self._drop_code
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
                await self._close(code)
        finally:
            dropped.cancel()
            reader.cancel()
            heartbeat.cancel()
            if code == SERVICE_RESTART or self.state.service.closing:
                # The server is stopping. uvicorn has already sent the client close 1012 and
                # dropped the connection (its lifespan drain runs only after this handler
                # returns), so this connection's own turns (the running one and those sent
                # before the restart) are finished here, unseen, and stored: the client finds
                # them in the history when it reconnects. Bounded by the drain time.
                await self._drain(worker, self.state.settings.web.drain_seconds)
            worker.cancel()  # a customer who left: generation stops, what was shown is stored
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await heartbeat

    async def _close(self, code: int) -> None:
        """Close the socket; if even the close frame cannot be sent within a moment (a client
        that reads nothing), drop the TCP connection."""
        try:
            await asyncio.wait_for(self.socket.close(code), _CLOSE_SECONDS)
        except asyncio.TimeoutError:
            _abort_connection()
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass

    async def _drain(self, worker: asyncio.Task[None], timeout: float) -> None:
        """Wait until every message this connection queued has been answered (or `timeout`)."""
        answered = asyncio.ensure_future(self.queue.join())
        try:
            await asyncio.wait({answered, worker}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            answered.cancel()

    async def _read(self) -> int:
        """Read frames until the client leaves; returns the close code."""
        while True:
            message = await self.socket.receive()
            if message["type"] == "websocket.disconnect":
                return int(message.get("code") or 1000)
            self._heard.set()
            raw = message.get("text")
            try:
                await self._frame(raw)
            except FrameError as exc:
                await self._refused_frame(exc, raw)
            except Exception as exc:  # one bad frame never ends the connection
                failed = unavailable(f"web frame failed in {self.conversation_id}", exc, log,
                                     trace=True)
                await self.refuse("internal", f"the frame failed (request "
                                  f"{failed.request_id})", _client_id_of(raw))

    async def _frame(self, raw: str | None) -> None:
        """Check one frame and act on it; FrameError if it is refused."""
        web = self.state.settings.web
        try:
            if raw is None:
                raise FrameError("binary_frame", "binary frames are not accepted: send "
                                 "JSON as text frames")
            if len(raw.encode("utf-8", "surrogatepass")) > web.max_frame_bytes:
                raise FrameError("frame_too_large", f"frame is larger than "
                                 f"{web.max_frame_bytes} bytes")
            frame = parse_frame(raw, self.state.settings.dialogue.max_input_chars)
        except FrameError:
            # Invalid frames spend the budget like messages: a flood of them is limited too.
            self._limit(self.conversation_id)
            raise
        await self._accept(frame)

    async def _refused_frame(self, exc: FrameError, raw: str | None) -> None:
        """Answer a refused frame; a client that keeps sending while rate-limited is dropped."""
        if exc.code != "rate_limited":
            await self.refuse(exc.code, exc.message, _client_id_of(raw))
            return
        self._refused += 1
        if self._refused >= _MAX_REFUSED:
            log.warning("web socket of %s dropped: %d frames in a row over the rate limit",
                        self.conversation_id, self._refused)
            self.drop(POLICY_CLOSE, "flood")
            return
        await self.refuse(exc.code, exc.message, _client_id_of(raw))

    def _limit(self, conversation_id: str | None) -> None:
        """Spend a frame of the budget (the IP's, and the conversation's if given), or raise
        FrameError rate_limited."""
        wait = self.state.limit(self.ip, conversation_id)
        if wait:
            raise FrameError("rate_limited", f"too many messages: wait {wait:.1f} s")
        self._refused = 0

    async def _accept(self, frame: ChatFrame | FeedbackFrame | PingFrame) -> None:
        # Pings, pongs and ratings count against the IP's budget only: a customer who asked
        # five quick questions may still rate the answers and keep the socket alive.
        chat = isinstance(frame, ChatFrame)
        self._limit(self.conversation_id if chat else None)
        if isinstance(frame, PingFrame):
            if not frame.pong:
                await self.send({"type": "pong"})
            return
        if isinstance(frame, FeedbackFrame):
            await self._feedback(frame)
            return
        if self.queue.full():
            raise FrameError("rate_limited", f"{_MAX_QUEUED} messages are already waiting "
                             "for an answer")
        self.queue.put_nowait(frame)

    async def _feedback(self, frame: FeedbackFrame) -> None:
        try:
            stored = await self.state.manager.feedback(
                self.conversation_id, frame.message_id, frame.rating, frame.comment,
                source=self.source, channel="web")
        except InputError as exc:
            raise FrameError("bad_frame", str(exc)) from None
        except StorageError as exc:  # the detail (a database URL, a driver error) to the log
            failed = unavailable("the rating cannot be stored right now", exc, log)
            raise FrameError("unavailable", f"{failed.message}; try again shortly (request "
                             f"{failed.request_id})") from None
        if not stored:
            raise FrameError("unknown_message", f"message {frame.message_id} is not a bot "
                             "message of this conversation")
        self.state.metrics.feedback.labels(frame.rating).inc()
        await self.send({"type": "feedback", "message_id": frame.message_id,
                         "rating": frame.rating})

    async def _answer(self) -> None:
        """Answer queued messages one after another, streaming each turn's verified text."""
        while True:
            frame = await self.queue.get()
            message = UserMessage(frame.text, self.conversation_id, channel="web",
                                  user_id="web", client_id=frame.client_id,
                                  source=self.source)
            try:
                # Closed at once when the worker is cancelled (the customer left): generation
                # stops and what was shown is stored as an interrupted reply.
                async with contextlib.aclosing(self.state.service.turn(message)) as events:
                    async for event in events:
                        if isinstance(event, TextEvent):
                            await self.send({"type": "token", "text": event.text,
                                             "client_id": frame.client_id})
                        elif isinstance(event, StatusEvent):  # an action's call runs
                            await self.send({"type": "working", "kind": event.kind,
                                             "text": event.text,
                                             "client_id": frame.client_id})
                        elif isinstance(event, BotReply):
                            await self.send(reply_frame(event, frame.client_id))
            except ShuttingDownError:
                await self.refuse("unavailable", "the server is shutting down; reconnect "
                                  "in a moment", frame.client_id)
            except Exception as exc:  # one bad turn never ends the connection
                failed = unavailable(f"web turn failed in {self.conversation_id}", exc, log,
                                     trace=True)
                await self.refuse("internal", f"the turn failed; try again (request "
                                  f"{failed.request_id})",
                                  frame.client_id)
            finally:
                self.queue.task_done()

    async def _heartbeat(self) -> None:
        interval = self.state.settings.web.heartbeat_seconds
        missed = 0
        while True:
            await asyncio.sleep(interval)
            if self._heard.is_set():
                missed = 0
            else:
                missed += 1
            self._heard.clear()
            if missed >= 2:  # two intervals without a frame: the client is gone
                self.drop(1001)
                return
            await self.send({"type": "ping"})


def _abort_connection() -> None:
    """Drop the TCP connection of the web socket this task serves, unsent frames and all.

    ASGI offers no way to do this, and a plain close waits, forever, until a client that reads
    nothing has read the frames still buffered. uvicorn runs each connection's handler in a task
    of its connection's protocol object: its transport is aborted. Anything else (another
    server, the test client) is left to its own close.
    """
    task = asyncio.current_task()
    frame = getattr(task.get_coro(), "cr_frame", None) if task is not None else None
    owner = frame.f_locals.get("self") if frame is not None else None
    transport = getattr(owner, "transport", None)
    if isinstance(transport, asyncio.Transport):
        transport.abort()


async def chat_socket(socket: WebSocket) -> None:
    """`WS /ws`: see docs/web.md."""
    state: WebState = socket.app.state.web
    ip = client_ip(socket)
    await socket.accept()
    origin = socket.headers.get("origin")
    if origin is not None and not same_origin(origin, socket.headers.get("host", "")) \
            and origin not in state.settings.web.cors_origins:
        # Browsers let any page open a web socket anywhere: only the bot's own page (and the
        # origins in web.cors_origins) may talk to it. Clients that are not browsers send none.
        state.metrics.errors.labels("bad_origin").inc()
        await socket.send_json(error_frame("bad_origin", f"origin {origin[:100]} may not use "
                                           "this chat; add it to web.cors_origins"))
        await socket.close(BAD_TOKEN_CLOSE)
        return
    if state.service.closing:
        await socket.send_json(error_frame("unavailable", "the server is shutting down"))
        await socket.close(1012)
        return
    wait = state.ip_limits.hit(ip)
    if wait:
        state.metrics.rate_limited.labels("ip").inc()
        await socket.send_json(error_frame("rate_limited", f"too many connections: wait "
                                           f"{wait:.1f} s"))
        await socket.close(1013)
        return
    conversation_id = socket.query_params.get("conversation_id")
    token = socket.query_params.get("token")
    resumed = conversation_id is not None or token is not None
    if resumed:
        if not conversation_id or not token or not state.tokens.verify(conversation_id, token):
            state.metrics.errors.labels("bad_token").inc()
            await socket.send_json(error_frame(
                "bad_token", "conversation_id and token do not match: start a new "
                "conversation (connect without them)"))
            await socket.close(BAD_TOKEN_CLOSE)
            return
    else:
        conversation_id, token = state.tokens.new()
    assert conversation_id is not None and token is not None
    try:
        history = await state.manager.transcript(conversation_id) if resumed else []
        status = await state.manager.status(conversation_id) if resumed \
            else ConversationStatus.BOT
    except StorageError as exc:
        log.error("cannot read conversation %s: %s", conversation_id, exc)
        await socket.send_json(error_frame("unavailable", "the conversation cannot be read "
                                           "right now; try again shortly"))
        await socket.close(1011)
        return
    persona = state.settings.persona
    await socket.send_json({
        "type": "hello", "conversation_id": conversation_id, "token": token,
        "resumed": resumed, "status": status.value, "bot_name": persona.bot_name,
        "company_name": persona.company_name, "greeting": persona.render(persona.greeting),
        "history": [history_item(item) for item in history],
        "heartbeat_seconds": state.settings.web.heartbeat_seconds,
        "max_text_chars": state.settings.dialogue.max_input_chars,
        "max_frame_bytes": state.settings.web.max_frame_bytes})
    state.metrics.websockets.inc()
    connection = ChatConnection(socket, state, conversation_id)
    state.customers.add(conversation_id, connection.send)  # operators' replies come this way
    try:
        await connection.run()
    except WebSocketDisconnect:
        pass
    finally:
        state.customers.discard(conversation_id, connection.send)
        state.metrics.websockets.dec()
