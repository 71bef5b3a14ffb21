"""Every Bot API call but getUpdates goes through here: throttled, and retried with backoff."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

from telegram.error import BadRequest, NetworkError, RetryAfter
from telegram.ext import AIORateLimiter, BaseRateLimiter

from bot.settings import TelegramSettings

log = logging.getLogger(__name__)
Result = bool | dict[str, Any] | list[dict[str, Any]]


class RetryingLimiter(BaseRateLimiter[int]):
    """python-telegram-bot's rate-limiter hook, used to retry calls that failed with flood
    control (RetryAfter: after the wait Telegram asks for), a timeout or a network error (with
    doubling backoff). Bad requests are not retried. With `throttle` (python-telegram-bot's
    AIORateLimiter), calls are also spread under Telegram's limits, and the throttle does the
    RetryAfter retries itself, pausing all calls while it waits.

    A timed-out sendMessage may have reached Telegram: its retry can show the customer a
    message twice, which beats losing an answer.
    """

    def __init__(self, retries: int, backoff: float, max_backoff: float,
                 throttle: BaseRateLimiter[int] | None = None) -> None:
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.throttle = throttle
        self.retried = 0  # calls retried so far (for logs and tests)

    @classmethod
    def from_settings(cls, settings: TelegramSettings) -> RetryingLimiter:
        """The limiter the settings ask for."""
        throttle = AIORateLimiter(max_retries=settings.max_retries) if settings.rate_limit \
            else None
        return cls(settings.max_retries, settings.retry_backoff_seconds,
                   settings.retry_max_backoff_seconds, throttle)

    async def initialize(self) -> None:
        """Start the throttle, if any."""
        if self.throttle is not None:
            await self.throttle.initialize()

    async def shutdown(self) -> None:
        """Stop the throttle, if any."""
        if self.throttle is not None:
            await self.throttle.shutdown()

    async def process_request(
        self, callback: Callable[..., Coroutine[Any, Any, Result]], args: Any,
        kwargs: dict[str, Any], endpoint: str, data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Result:
        """Make the call; retry it while it fails in a way that may pass."""
        attempt = 0
        while True:
            error: Exception
            try:
                if self.throttle is not None:
                    return await self.throttle.process_request(callback, args, kwargs, endpoint,
                                                               data, None)
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                if self.throttle is not None:  # it has waited and retried already, holding
                    raise                      # back every other call meanwhile
                wait, error = retry_after_seconds(exc) + 0.1, exc
            except BadRequest:
                raise
            except NetworkError as exc:  # timeouts included
                wait, error = min(self.backoff * 2 ** attempt, self.max_backoff), exc
            if attempt >= self.retries:
                log.error("Telegram %s failed after %d retries: %s", endpoint, attempt, error)
                raise error
            attempt += 1
            self.retried += 1
            log.warning("Telegram %s failed (%s: %s); retry %d of %d in %.1f s", endpoint,
                        type(error).__name__, error, attempt, self.retries, wait)
            await asyncio.sleep(wait)


def retry_after_seconds(error: RetryAfter) -> float:
    """The wait a RetryAfter asks for, in seconds (whatever python-telegram-bot's time mode)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = error.retry_after
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
