"""The telegram section: token, polling or webhook, retries and the channel's own texts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bot.settings.base import NAMES as _NAMES
from bot.settings.base import Section as _Section
from bot.settings.base import placeholders as _placeholders

_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{30,}$")  # BotFather's format: <bot id>:<secret>
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # what Telegram accepts as secret_token
TELEGRAM_TEXTS = ("help_text", "text_only_text", "reset_text", "feedback_text", "not_yours_text")


class TelegramSettings(_Section):
    """The Telegram channel (`supportbot telegram`): token, polling or webhook, and rendering."""

    token: SecretStr | None = Field(None, description="The bot's token from BotFather "
                                    "(123456:ABC...); better set as SUPPORTBOT_TELEGRAM__TOKEN.")
    base_url: str = Field("https://api.telegram.org/bot", min_length=1, description="Bot API "
                          "base URL in python-telegram-bot's form (the token is appended); "
                          "change it for your own Bot API server.")
    base_file_url: str = Field("https://api.telegram.org/file/bot", min_length=1,
                               description="Bot API file URL, in the same form.")
    mode: Literal["polling", "webhook"] = Field("polling", description="polling: ask Telegram "
                                                "for updates (works behind any firewall); "
                                                "webhook: Telegram posts them to webhook_url.")
    poll_timeout_seconds: int = Field(10, ge=0, le=50, description="Long-polling wait of one "
                                      "getUpdates call.")
    webhook_url: str | None = Field(None, description="Public HTTPS URL Telegram posts updates "
                                    "to (webhook mode), ending in webhook_path.")
    webhook_secret: SecretStr | None = Field(None, description="Secret Telegram sends in "
                                             "X-Telegram-Bot-Api-Secret-Token (A-Z, a-z, 0-9, "
                                             "_ and -); unset: derived from the token.")
    webhook_share_web_port: bool = Field(False, description="Serve the webhook from "
                                         "`supportbot serve` at webhook_path, not from a "
                                         "server of its own.")
    webhook_listen: str = Field("127.0.0.1", description="Address the webhook's own server "
                                "listens on (behind your HTTPS proxy).")
    webhook_port: int = Field(8443, ge=1, le=65535, description="Port the webhook's own "
                              "server listens on.")
    webhook_path: str = Field("/telegram/webhook", pattern=r"^/[\w./-]*$",
                              description="Path the webhook is served at.")
    answer_edited: bool = Field(False, description="Answer a customer's edited message as a "
                                "new one (default: ignore edits).")
    stream_edits: bool = Field(True, description="Show a generated answer as it is verified, "
                               "by editing one message; off: send it once complete.")
    edit_interval_seconds: float = Field(1.0, ge=0.1, le=60, description="Least time between "
                                         "two edits of a streamed message in a private chat.")
    group_edit_interval_seconds: float = Field(3.0, ge=0.1, le=60, description="The same in "
                                               "groups, where Telegram allows 20 messages a "
                                               "minute.")
    max_concurrent_updates: int = Field(64, ge=1, le=4096, description="Updates handled at "
                                        "once (one chat's always one after another, in order).")
    rate_limit: bool = Field(True, description="Spread outgoing calls under Telegram's flood "
                             "limits (python-telegram-bot's AIORateLimiter).")
    max_retries: int = Field(5, ge=0, le=50, description="Retries of a call that failed with "
                             "flood control (RetryAfter), a timeout or a network error.")
    retry_backoff_seconds: float = Field(1.0, ge=0.0, le=60, description="Wait before the "
                                         "first retry; it doubles with each further one.")
    retry_max_backoff_seconds: float = Field(30.0, ge=0.0, le=600, description="Longest wait "
                                             "between retries (a RetryAfter's own wait wins).")
    request_timeout_seconds: float = Field(20.0, gt=0, le=300, description="How long one Bot "
                                           "API call may take.")
    drain_seconds: float = Field(30.0, ge=0, le=600, description="On shutdown, how long "
                                 "updates in flight may take to finish.")
    state_file: Path | None = Field(Path(".supportbot/telegram-state.pickle"),
                                    description="Where each chat's current conversation is "
                                    "kept across restarts; null: in memory only.")
    help_text: str = Field(
        "I'm {bot_name}, the assistant of {company_name}. Ask me a question in your own words. "
        "/reset starts a new conversation, /human passes you to a colleague.", min_length=1,
        description="Reply to /help.")
    text_only_text: str = Field(
        "Sorry, I can read text only. Please type your question.", min_length=1,
        description="Reply to photos, stickers, voice messages, files and the like.")
    reset_text: str = Field("All right, let's start over. How can I help you?", min_length=1,
                            description="Reply to /reset.")
    feedback_text: str = Field("Thanks for your feedback!", min_length=1,
                               description="Shown briefly when a customer rates an answer.")
    not_yours_text: str = Field("These buttons belong to another customer's question.",
                                min_length=1, description="Shown briefly when someone in a "
                                "group presses buttons under another customer's answer.")

    @field_validator("token")
    @classmethod
    def _token_format(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and not _TOKEN.match(token.get_secret_value().strip()):
            raise ValueError("not a bot token: BotFather's tokens look like "
                             "123456789:AAH...(digits, a colon, then 30 or more letters, "
                             "digits, _ or -)")
        return SecretStr(token.get_secret_value().strip()) if token is not None else None

    @field_validator("state_file")
    @classmethod
    def _expand_user(cls, path: Path | None) -> Path | None:
        return path.expanduser() if path is not None else None

    @field_validator("webhook_secret")
    @classmethod
    def _secret_format(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and not _WEBHOOK_SECRET.match(secret.get_secret_value()):
            raise ValueError("the webhook secret must be 1 to 256 characters of A-Z, a-z, "
                             "0-9, _ and -")
        return secret

    @field_validator(*TELEGRAM_TEXTS)
    @classmethod
    def _known_placeholders(cls, text: str) -> str:
        for name in _placeholders(text):
            if name not in _NAMES:
                raise ValueError(f"unknown placeholder {{{name}}} (allowed: {{bot_name}}, "
                                 "{company_name}; write {{ and }} for a literal brace)")
        return text

    @model_validator(mode="after")
    def _webhook_needs_url(self) -> TelegramSettings:
        if self.mode == "webhook" and not self.webhook_url:
            raise ValueError("mode webhook needs webhook_url (the public HTTPS URL Telegram "
                             "posts updates to)")
        return self
