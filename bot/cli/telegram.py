"""`supportbot telegram`: answer customers on Telegram, by long polling or a webhook."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.markup import escape

from bot.cli.common import check_backend, err, faq_index, model_loader, settings_of, user_errors
from bot.errors import SupportbotError


def telegram(ctx: typer.Context,
             mode: Annotated[str | None, typer.Option(
                 help="polling or webhook [default: telegram.mode, polling].")] = None) -> None:
    """Answer customers on Telegram (long polling, or a webhook: see the README)."""
    with user_errors():
        settings = settings_of(ctx)
        if mode is not None:
            from pydantic import ValidationError

            from bot.settings import TelegramSettings

            try:
                tg = TelegramSettings.model_validate({**dict(settings.telegram), "mode": mode})
            except ValidationError as exc:
                raise SupportbotError("--mode: " + "; ".join(
                    str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from None
            settings = settings.model_copy(update={"telegram": tg})
        from bot.channels.telegram.service import bot_token, shares_web_port

        bot_token(settings.telegram)  # a missing token fails before the index is opened
        if shares_web_port(settings):
            raise SupportbotError("telegram.webhook_share_web_port is on: the webhook is "
                                  "served by `supportbot serve`, not by this command")
        import logging

        from bot.channels.telegram.run import run

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call otherwise
        check_backend(settings)  # before the index: refused at once, not after building it
        built = faq_index(settings)
        tg = settings.telegram

        def ready(service: Any) -> None:
            how = f"webhook {tg.webhook_url} (listening on {tg.webhook_listen}:" \
                f"{tg.webhook_port}{tg.webhook_path})" if tg.mode == "webhook" \
                else "long polling"
            err.print(f"[green]on Telegram[/] as @{escape(service.username)} by "
                      f"{escape(how)}  [dim](Ctrl+C stops)[/]")

        asyncio.run(run(settings, built, model_loader(settings), on_ready=ready))
