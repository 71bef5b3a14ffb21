"""The Telegram channel: python-telegram-bot's Application, by long polling or webhook."""

from bot.channels.telegram.service import TelegramService, build_application, shares_web_port

__all__ = ["TelegramService", "build_application", "shares_web_port"]
