"""A small demo shop API for the sample bot's actions: DEMO DATA for the sample FAQ only.

`create_app(token)` serves a few seeded orders and returns (`supportbot serve` mounts it with
`actions.demo_shop: true`, and the tests and eval scripts call it), so the sample FAQ's actions
can be tried without a real shop. Fixtures: `KO-000500` answers 500 and `KO-000504` answers
only after 10 s (it stops as soon as the client goes away). Nothing here is real customer data.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

SLOW_SECONDS = 10.0
TRACKING = "https://tracking.example/parcel/"

ORDERS: dict[str, dict[str, Any]] = {
    "KO-123456": {"order_id": "KO-123456", "status": "shipped", "carrier": "Parcelo",
                  "tracking_url": TRACKING + "PX7781234", "eta": "2 days",
                  "items": [{"name": "Ridge 2 tent", "quantity": 1}]},
    "KO-654321": {"order_id": "KO-654321", "status": "delivered", "carrier": "Parcelo",
                  "tracking_url": TRACKING + "PX5550001", "eta": "delivered",
                  "items": [{"name": "Trail boots", "quantity": 1},
                            {"name": "Wool socks", "quantity": 2}]},
    "KO-111111": {"order_id": "KO-111111", "status": "processing", "carrier": "",
                  "tracking_url": "", "eta": "ships within 2 working days",
                  "items": [{"name": "Down jacket", "quantity": 1}]},
    "KO-222222": {"order_id": "KO-222222", "status": "cancelled", "carrier": "",
                  "tracking_url": "", "eta": "",
                  "items": [{"name": "Headlamp", "quantity": 1}]},
}
RETURNS: dict[str, dict[str, Any]] = {
    "KO-654321": {"order_id": "KO-654321", "status": "received", "refund_amount": "24.90"},
    "KO-222222": {"order_id": "KO-222222", "status": "refunded", "refund_amount": "39.00"},
}


def _not_found(order_id: str) -> JSONResponse:
    return JSONResponse({"error": "not_found", "order_id": order_id}, status_code=404)


def create_app(token: str | None = None) -> FastAPI:
    """The demo shop; with `token`, every request needs `Authorization: Bearer <token>`."""
    def bearer(request: Request) -> None:
        # A dependency, not a middleware: an endpoint behind an http middleware does not see
        # its client go away, and KO-000504 must stop when it does.
        if token is not None:
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise HTTPException(401, "unauthorized")

    app = FastAPI(title="Demo shop (sample data)", docs_url=None, redoc_url=None,
                  openapi_url=None, dependencies=[Depends(bearer)])
    orders = copy.deepcopy(ORDERS)  # each app its own copy: cancelling changes it

    async def fixtures(order_id: str, request: Request) -> None:
        if order_id == "KO-000500":
            raise HTTPException(500, "the demo shop's failing order")
        if order_id == "KO-000504":
            loop = asyncio.get_running_loop()
            until = loop.time() + SLOW_SECONDS
            while loop.time() < until:
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.1)

    @app.get("/orders/{order_id}")
    async def order(order_id: str, request: Request) -> Any:
        await fixtures(order_id, request)
        found = orders.get(order_id.upper())
        return found if found is not None else _not_found(order_id)

    @app.get("/returns/{order_id}")
    async def returned(order_id: str, request: Request) -> Any:
        await fixtures(order_id, request)
        found = RETURNS.get(order_id.upper())
        return found if found is not None else _not_found(order_id)

    @app.post("/orders/{order_id}/cancel")
    async def cancel(order_id: str) -> Any:
        found = orders.get(order_id.upper())
        if found is None:
            return _not_found(order_id)
        if found["status"] != "processing":
            return JSONResponse({"error": "not_cancellable", "order_id": found["order_id"],
                                 "status": found["status"]}, status_code=409)
        found["status"] = "cancelled"
        return {"order_id": found["order_id"], "status": "cancelled"}

    return app
