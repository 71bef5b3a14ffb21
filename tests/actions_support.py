"""Helpers for the actions tests: a hostile API on loopback that records every request it
sees, and actions built in code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

from bot.actions.model import Action, Call, Reply, Slot

ORDER = Slot("order_id", r"KO-\d{6}", "What's your order number?", upper=True)


@dataclass
class Hits:
    """What a hostile server saw: raw request paths, methods, and the bytes it streamed."""

    paths: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    streamed: int = 0
    fail_status: int = 500


def action(url: str, *, method: str = "GET", timeout_s: float = 3.0,
           reply: str = "Order {order_id} is {status}.", headers: tuple[tuple[str, str], ...] = (),
           body: Any = None, ident: str = "a") -> Action:
    """An action with the order slot calling `url`."""
    return Action(ident, ("where is my order",), (ORDER,),
                  Call(method, url, headers, body, timeout_s), Reply(text=reply),
                  {404: "No order {order_id}."}, "Our order system is down.")


class _Record:
    """Pure ASGI (an http middleware would hide a client's going away from the endpoints)."""

    def __init__(self, app: Any, hits: Hits) -> None:
        self.app, self.hits = app, hits

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.hits.paths.append(scope["raw_path"].decode())
            self.hits.methods.append(scope["method"])
        await self.app(scope, receive, send)


def hostile_app(hits: Hits, other: str = "") -> FastAPI:
    """An API that misbehaves on purpose; `other` is another server's host:port."""
    app = FastAPI()
    app.add_middleware(_Record, hits=hits)

    @app.api_route("/ok/{rest:path}", methods=["GET", "POST"])
    async def ok(rest: str) -> Any:
        return {"status": "shipped", "path": rest}

    @app.get("/slow")
    async def slow(request: Request) -> Any:
        for _ in range(50):  # 5 s, or until the client goes away
            if await request.is_disconnected():
                break
            await asyncio.sleep(0.1)
        return {"status": "late"}

    @app.api_route("/fail", methods=["GET", "POST"])
    async def fail() -> Any:
        if hits.fail_status < 400:
            return {"status": "recovered"}
        return JSONResponse({"error": "down"}, status_code=hits.fail_status)

    @app.get("/badjson")
    async def badjson() -> Response:
        return Response('{"status": "shipp', media_type="application/json")

    @app.get("/nofield")
    async def nofield() -> Any:
        return {"state": "shipped"}

    @app.get("/away")
    async def away() -> Any:
        return RedirectResponse(f"http://{other}/ok/stolen", status_code=302)

    @app.get("/same")
    async def same() -> Any:
        return RedirectResponse("/ok/followed", status_code=302)

    @app.get("/loop")
    async def loop() -> Any:
        return RedirectResponse("/loop", status_code=302)

    @app.get("/huge")
    async def huge() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"status": "'
            for _ in range(10 * 16):  # 10 MB in 64 KiB pieces
                hits.streamed += 65536
                yield b"x" * 65536
            yield b'"}'
        return StreamingResponse(chunks(), media_type="application/json")

    @app.get("/declared")
    async def declared() -> Response:
        return Response(b'{"status": "' + b"x" * 2_000_000 + b'"}',
                        media_type="application/json")

    @app.get("/orders/{rest:path}")
    async def orders(rest: str) -> Any:
        return {"status": "seen", "path": rest}

    return app
