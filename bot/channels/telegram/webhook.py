"""The Telegram webhook as a route of the web server (telegram.webhook_share_web_port): a
channel the web app serves on its port without knowing it is Telegram (bot.channels.serve
composes the two)."""

from __future__ import annotations

import hmac
import json
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.channels.telegram.handlers import TurnFn
from bot.channels.telegram.service import TelegramService, bot_token
from bot.dialogue import DialogueManager
from bot.settings import Settings

log = logging.getLogger(__name__)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_UPDATE_BYTES = 1 << 20  # far above any update Telegram sends


class SharedWebhook:
    """The Telegram channel on the web server's port: its webhook route, and its service, which
    the web app starts after its core and stops before draining its turns."""

    def __init__(self, settings: Settings) -> None:
        bot_token(settings.telegram)  # a missing token fails before serving
        self.settings = settings
        self.path = settings.telegram.webhook_path
        self.service: TelegramService | None = None

    async def start(self, manager: DialogueManager, turn: TurnFn) -> None:
        """Start the channel, its turns run by `turn` (the web's: counted in its metrics)."""
        self.service = TelegramService(self.settings, manager, turn)
        await self.service.start()

    async def stop(self) -> None:
        """Stop it, letting its updates in flight finish."""
        if self.service is not None:
            await self.service.stop()

    async def endpoint(self, request: Request) -> Response:
        """`POST telegram.webhook_path`."""
        return await telegram_webhook(self.service, request)


async def telegram_webhook(service: TelegramService | None, request: Request) -> Response:
    """One update from Telegram for `service`, checked against the secret."""
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
