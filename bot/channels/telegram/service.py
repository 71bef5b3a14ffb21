"""TelegramService: the python-telegram-bot Application, built from settings, started in the
configured mode (long polling, webhook on its own server, or webhook on the web server's port)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from typing import Any

from telegram import Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import Application, ApplicationBuilder, PersistenceInput, PicklePersistence

from bot.channels.telegram.client import bot_request
from bot.channels.telegram.handlers import ALLOWED_UPDATES, TelegramChannel, TurnFn
from bot.channels.telegram.processor import ChatOrderedProcessor
from bot.channels.telegram.retry import RetryingLimiter
from bot.dialogue import DialogueManager
from bot.errors import ChannelError, SettingsError
from bot.settings import Settings, TelegramSettings

log = logging.getLogger(__name__)
App = Application[Any, Any, Any, Any, Any, Any]


def bot_token(settings: TelegramSettings) -> str:
    """The token; SettingsError when it is not set (a malformed one fails at load already)."""
    if settings.token is None:
        raise SettingsError(["telegram.token: not set; create a bot with @BotFather and set "
                             "SUPPORTBOT_TELEGRAM__TOKEN (or telegram.token in the file)"])
    return settings.token.get_secret_value()


def webhook_secret(settings: TelegramSettings) -> str:
    """The secret Telegram sends with each webhook call: the setting, or one derived from the
    token (the same in every worker and after every restart, and useless without the token)."""
    if settings.webhook_secret is not None:
        return settings.webhook_secret.get_secret_value()
    return hmac.new(bot_token(settings).encode(), b"supportbot telegram webhook",
                    hashlib.sha256).hexdigest()


def shares_web_port(settings: Settings) -> bool:
    """Whether `supportbot serve` also serves the Telegram webhook."""
    return settings.telegram.mode == "webhook" and settings.telegram.webhook_share_web_port


def build_application(settings: Settings, manager: DialogueManager,
                      turn: TurnFn | None = None, updater: bool = True) -> App:
    """The Application with the channel's handlers, retries, throttle and per-chat order."""
    tg = settings.telegram
    builder = (ApplicationBuilder().token(bot_token(tg))
               .base_url(tg.base_url).base_file_url(tg.base_file_url)
               .rate_limiter(RetryingLimiter.from_settings(tg))
               .concurrent_updates(ChatOrderedProcessor(tg.max_concurrent_updates))
               .request(bot_request(tg, min(tg.max_concurrent_updates, 256) + 4)))
    if tg.state_file is not None:
        tg.state_file.parent.mkdir(parents=True, exist_ok=True)
        builder = builder.persistence(PicklePersistence(
            tg.state_file, store_data=PersistenceInput(bot_data=False, chat_data=False,
                                                       callback_data=False)))
    if not updater:
        builder = builder.updater(None)
    app: App = builder.build()
    TelegramChannel(settings, manager, turn).register(app)
    return app


class TelegramService:
    """The Telegram channel, running: `start()` checks the token with getMe and begins taking
    updates in the configured mode; `stop()` lets updates in flight finish, then closes."""

    def __init__(self, settings: Settings, manager: DialogueManager,
                 turn: TurnFn | None = None) -> None:
        self.settings = settings
        self.tg = settings.telegram
        self.shared = shares_web_port(settings)
        self.app = build_application(settings, manager, turn, updater=not self.shared)
        self.secret = webhook_secret(self.tg)

    @property
    def username(self) -> str:
        """The bot's @username (known once started)."""
        return self.app.bot.username

    async def start(self) -> None:
        """getMe, then polling or the webhook; ChannelError with a clear reason if it fails."""
        tg = self.tg
        try:
            await self.app.initialize()  # getMe: the token is checked here
        except InvalidToken as exc:
            raise ChannelError(f"Telegram refused the bot token ({exc}): check telegram.token "
                               "(SUPPORTBOT_TELEGRAM__TOKEN) against @BotFather") from None
        except TelegramError as exc:
            raise ChannelError(f"cannot reach the Telegram Bot API at {tg.base_url}: "
                               f"{type(exc).__name__}: {exc}") from None
        try:
            await self._listen()
            await self.app.start()
        except (TelegramError, OSError) as exc:  # OSError: the webhook's port is taken
            await self.stop()
            raise ChannelError(f"Telegram {tg.mode} could not start: {exc}") from None
        log.info("telegram: @%s is taking updates by %s", self.username,
                 "webhook" if tg.mode == "webhook" else "long polling")

    async def _listen(self) -> None:
        tg = self.tg
        if tg.mode == "polling":
            assert self.app.updater is not None
            await self.app.updater.start_polling(
                timeout=tg.poll_timeout_seconds, allowed_updates=ALLOWED_UPDATES,
                error_callback=lambda exc: log.warning("telegram: getUpdates failed: %s", exc))
        elif self.shared:
            await self.app.bot.set_webhook(tg.webhook_url or "", secret_token=self.secret,
                                           allowed_updates=ALLOWED_UPDATES)
        else:
            assert self.app.updater is not None
            await self.app.updater.start_webhook(
                listen=tg.webhook_listen, port=tg.webhook_port,
                url_path=tg.webhook_path.lstrip("/"), webhook_url=tg.webhook_url,
                secret_token=self.secret, allowed_updates=ALLOWED_UPDATES)

    async def feed(self, data: dict[str, Any]) -> None:
        """Queue one update that arrived by the shared webhook route."""
        await self.app.update_queue.put(Update.de_json(data, self.app.bot))

    async def stop(self) -> None:
        """Stop taking updates, let those in flight finish (telegram.drain_seconds), close."""
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            stopping = asyncio.ensure_future(self.app.stop())
            done, _ = await asyncio.wait({stopping}, timeout=self.tg.drain_seconds)
            if not done:
                log.warning("telegram: updates still running after %.0f s; stopping them",
                            self.tg.drain_seconds)
                stopping.cancel()
            else:
                stopping.result()
        await self.app.shutdown()  # returns at once if it never initialized

    async def __aenter__(self) -> TelegramService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
