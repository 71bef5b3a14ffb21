"""The Telegram webhook as a route of the web server (telegram.webhook_share_web_port)."""

from __future__ import annotations

import hmac
import json
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.channels.telegram.service import TelegramService

log = logging.getLogger(__name__)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_UPDATE_BYTES = 1 << 20  # far above any update Telegram sends


async def telegram_webhook(request: Request) -> Response:
    """`POST telegram.webhook_path`: one update from Telegram, checked against the secret."""
    service: TelegramService | None = getattr(request.app.state, "telegram", None)
    if service is None or not service.app.running:
        return JSONResponse({"detail": "the Telegram channel is not running"}, status_code=503)
    given = request.headers.get(SECRET_HEADER, "")
    if not hmac.compare_digest(given.encode(), service.secret.encode()):
        log.warning("telegram webhook: refused a call without the right secret from %s",
                    request.client.host if request.client else "unknown")
        return JSONResponse({"detail": "wrong secret token"}, status_code=403)
    body = await request.body()
    if len(body) > MAX_UPDATE_BYTES:
        return JSONResponse({"detail": "update too large"}, status_code=413)
    try:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        await service.feed(data)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("telegram webhook: not an update: %s", exc)
        return JSONResponse({"detail": "not a Telegram update"}, status_code=400)
    return Response(status_code=200)
