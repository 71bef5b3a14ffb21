"""create_app(settings): the FastAPI application behind `supportbot serve`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.channels.web import learning as learning_api
from bot.channels.web import operators as operator_api
from bot.channels.web import rest
from bot.channels.web.metrics import CONTENT_TYPE, Metrics
from bot.channels.web.relay import PostgresRelay
from bot.channels.web.security import ConversationTokens
from bot.channels.web.service import ChatService
from bot.channels.web.state import WebState
from bot.channels.web.unavailable import Unavailable, unavailable, unavailable_response
from bot.channels.web.ws import chat_socket
from bot.dialogue import DialogueManager, Event
from bot.dialogue.replies import thresholds
from bot.errors import StorageError
from bot.generation.base import Generator
from bot.learning.answers import OperatorAnswers
from bot.operators.auth import LoginThrottle, SessionSigner
from bot.operators.delivery import ChatDelivery
from bot.operators.notices import wait_notices
from bot.operators.store import OperatorStore
from bot.runtime import Runtime, open_index, open_runtime
from bot.settings import Settings
from bot.types import UserMessage
from retrieval.embedder import Embedder
from retrieval.index import FaqIndex

log = logging.getLogger(__name__)
TurnFn = Callable[[UserMessage], AsyncGenerator[Event, None]]  # one message's stream of events
STATIC = Path(__file__).parent / "static"
_PAGE_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                 "Cache-Control": "no-cache"}
# The chat page: its own script and stylesheet only, talking to this origin only (web socket
# included); framed by any site, since widget.js puts it in an iframe on the company's pages.
_CHAT_HEADERS = {**_PAGE_HEADERS,
                 "Content-Security-Policy": "default-src 'none'; script-src 'self'; "
                 "style-src 'self'; connect-src 'self'; img-src 'self' data:; "
                 "base-uri 'none'; form-action 'none'"}
# The operator page: its own script and stylesheet only, talking to this origin only, never
# framed (it shows customers' conversations and acts with the operator's session).
_OPERATOR_HEADERS = {**_PAGE_HEADERS, "X-Frame-Options": "DENY",
                     "Content-Security-Policy": "default-src 'none'; script-src 'self'; "
                     "style-src 'self'; connect-src 'self'; img-src 'self' data:; "
                     "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"}


class SharedChannel(Protocol):
    """Another channel served on this app's port (the Telegram webhook, composed by
    bot.channels.serve): one POST route that limits its own bodies, started once the core is
    up and stopped before the web's turns drain."""

    path: str

    async def endpoint(self, request: Request) -> Response:
        """Handle one POST to `path`."""
        ...

    async def start(self, manager: DialogueManager, turn: TurnFn) -> None:
        """Start taking updates; `turn` is the web's (counted in its metrics and drain)."""
        ...

    async def stop(self) -> None:
        """Stop, letting the updates in flight finish."""
        ...


def create_app(settings: Settings, *, index: FaqIndex | None = None,
               embedder: Embedder | None = None,
               generator: Callable[[], Generator] | None = None,
               shared: Sequence[SharedChannel] = (),
               delivery: ChatDelivery | None = None) -> FastAPI:
    """The web app. Start-up opens (or builds) the index unless one is given, opens the
    database, and loads the model only if web.preload; shutdown drains turns, then closes.

    `generator` replaces the configured model's loader (tests pass a small one); `shared` are
    the other channels served on this port, and `delivery` sends operators' messages to
    Telegram chats (bot.channels.serve.served_app gives both).
    """
    tokens = ConversationTokens.from_settings(settings.web)  # a bad key fails before serving
    operators = settings.operators
    signer = SessionSigner(tokens.derived_key("operator-sessions"), operators.session_hours)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = index
        if opened is None:
            opened, rebuilt = await asyncio.to_thread(open_index, settings, embedder)
            if rebuilt is not None:
                log.info("index rebuilt: %s", rebuilt)
        assert opened is not None
        runtime: Runtime = await open_runtime(settings, opened, generator)
        manager = runtime.manager
        metrics = Metrics(lambda: manager.tokens_generated)
        if manager.actions is not None:
            manager.actions.listeners.append(metrics.action_call)
        state = WebState(settings, manager, ChatService(manager, metrics), metrics, tokens)
        app.state.web = state
        inbox = OperatorStore(manager.store)
        app.state.operators = operator_api.OperatorContext(
            inbox, signer,
            LoginThrottle.from_settings(operators), state,
            runtime.learning, delivery, runtime.use,
            None if runtime.use is None else OperatorAnswers(runtime.use, manager.intents))
        if manager.store.backend == "postgresql":  # other workers may hold the sockets
            state.customers.relay = PostgresRelay(settings.storage.database_url,
                                                  state.customers.push_here,
                                                  manager.store.engine)
            await state.customers.relay.start()
        notices = asyncio.create_task(wait_notices(settings, inbox, state, delivery))
        started: list[SharedChannel] = []
        try:
            if settings.web.preload:
                await asyncio.to_thread(lambda: manager.generator)
            for channel in shared:
                started.append(channel)
                await channel.start(manager, state.service.turn)
            app.state.ready = True
            yield
        finally:
            app.state.ready = False
            for channel in started:
                await channel.stop()  # lets its updates in flight finish
            if not await state.service.drain(settings.web.drain_seconds):
                log.warning("shutdown: %d turns still running after %.0f s; stopping them",
                            state.service.in_flight, settings.web.drain_seconds)
            notices.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await notices
            if delivery is not None:
                await delivery.close()
            if state.customers.relay is not None:
                await state.customers.relay.stop()
            await runtime.close()

    # No Swagger UI nor ReDoc (they load scripts from a CDN into the bot's origin); the schema
    # only when web.api_docs, and without the operator routes.
    app = FastAPI(title=f"{settings.persona.company_name} support bot", lifespan=lifespan,
                  summary="supportbot: FAQ answers, grounded generation and handoff, over a "
                  "web socket (/ws, see docs/web.md) and REST.", docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json" if settings.web.api_docs else None)
    app.add_exception_handler(Unavailable, unavailable_response)
    app.state.ready = False
    if settings.web.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.web.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-Conversation-Token"])
    # Telegram's updates are larger than chat frames: a shared channel's route limits them
    app.add_middleware(BodyLimit, limit=settings.web.max_frame_bytes,
                       exempt=tuple(channel.path for channel in shared))
    app.include_router(rest.router)
    app.include_router(operator_api.router, include_in_schema=False)
    app.include_router(learning_api.router, include_in_schema=False)
    for channel in shared:
        app.add_route(channel.path, channel.endpoint, methods=["POST"], include_in_schema=False)
    app.add_api_websocket_route("/ws", chat_socket)
    app.mount("/static", _Assets(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=_CHAT_HEADERS)

    @app.get("/operator", include_in_schema=False)
    async def operator_page() -> FileResponse:
        return FileResponse(STATIC / "operator.html", headers=_OPERATOR_HEADERS)

    @app.get("/widget.js", include_in_schema=False)
    async def widget() -> FileResponse:
        return FileResponse(STATIC / "widget.js", media_type="text/javascript",
                            headers=_PAGE_HEADERS)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Index loaded and database reachable")
    async def readyz(request: Request) -> JSONResponse:
        if not request.app.state.ready:
            return JSONResponse({"status": "starting or stopping"}, status_code=503)
        state: WebState = request.app.state.web
        try:
            await state.manager.ping()
        except StorageError as exc:
            failure = unavailable("database unreachable", exc, log)
            return JSONResponse({"status": failure.message, "request_id": failure.request_id},
                                status_code=503, headers=failure.headers)
        manager = state.manager
        return JSONResponse({"status": "ready", "faq_entries": len(manager.index.entries),
                             "model_loaded": manager.generator_loaded,
                             "thresholds": thresholds(manager.retrieval,
                                                      manager.index.calibration).to_dict()})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        state: WebState = request.app.state.web
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    return app


class _Assets(StaticFiles):
    """The pages' scripts, stylesheets and images. Not the pages: they are served at / and
    /operator with their security headers (CSP, frame protection), never without them."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path.lower().endswith((".html", ".htm")):
            raise HTTPException(404, "Not Found")
        return await super().get_response(path, scope)


class BodyLimit:
    """Refuses (413) request bodies over `limit` bytes, declared or streamed (but on the
    `exempt` paths, which limit their own)."""

    def __init__(self, app: ASGIApp, limit: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLargeError(413, f"request body larger than {self.limit} bytes")
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLargeError:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": f"request body larger than {self.limit} bytes"},
                                status_code=413)
        await response(scope, receive, send)


class _TooLargeError(HTTPException):
    """A body streamed in (no Content-Length) past the limit. An HTTPException, so that
    FastAPI passes it on as 413 (it turns any other error while reading a body into 400)."""


