"""`supportbot history` (review stored conversations) and `supportbot release` (give a
handed-off conversation back to the bot)."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

import typer
from rich.markup import escape

from bot.cli.common import out, settings_of, user_errors
from bot.errors import SupportbotError
from bot.settings import Settings

HISTORY_MAX = 10_000  # keeps --last inside what every database accepts as a LIMIT

# C0 and C1 control characters (but newline and tab), DEL, and the bidirectional overrides that
# reorder what a terminal shows: a stored message must not drive the operator's terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(text: object) -> str:
    """Stored text made safe to print: control characters as visible escapes, markup escaped."""
    def visible(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return escape(_CONTROL.sub(visible, str(text)))


def history(ctx: typer.Context,
            conversation_id: Annotated[str | None, typer.Argument(
                help="Show this conversation turn by turn (default: list recent ones).")] = None,
            last: Annotated[int, typer.Option(min=1, max=HISTORY_MAX, help="How many "
                                              "conversations to list, or messages to show.")
                            ] = 20) -> None:
    """Review stored conversations: what customers asked and what the bot decided."""
    with user_errors():
        settings = settings_of(ctx)
        asyncio.run(_history(settings, conversation_id, last))


async def _history(settings: Settings, conversation_id: str | None, last: int) -> None:
    """The recent conversations as a table, or one conversation turn by turn."""
    from rich.table import Table

    from bot.storage import ConversationStore, mask_url

    store = ConversationStore(settings.storage.database_url)
    try:
        await store.init()
        if conversation_id is None:
            table = Table("channel", "user")
            table.add_column("status", no_wrap=True, min_width=7)  # "handoff", never "hando…"
            table.add_column("last active")
            table.add_column("messages")
            # The id is what `history ID` takes, so it is never cut short with an ellipsis.
            table.add_column("conversation", no_wrap=True, min_width=32)
            for conversation, n in await store.recent_conversations(last):
                table.add_row(shown(conversation.channel), shown(conversation.user_id),
                              shown(conversation.status),
                              f"{conversation.updated_at:%Y-%m-%d %H:%M:%S}", str(n),
                              shown(conversation.id))
            out.print(table)
            return
        found = await store.get_conversation(conversation_id)
        if found is None:
            raise SupportbotError(f"no conversation '{conversation_id}' in "
                                  f"{mask_url(settings.storage.database_url)}")
        status = f"status {found.status}"
        if found.status_changed_at is not None:
            status += f" since {found.status_changed_at:%Y-%m-%d %H:%M:%S}"
        out.print(f"[bold]conversation[/] {shown(found.id)} · {shown(found.channel)} · "
                  f"user {shown(found.user_id)} · {shown(status)}")
        for m in await store.history(conversation_id, limit=last):
            if m.role == "user":
                out.print(f"[bold]customer[/] {m.created_at:%H:%M:%S}: {shown(m.text)}")
                continue
            out.print(f"[bold green]bot[/] {m.created_at:%H:%M:%S}: {shown(m.text)}")
            detail = f"{m.decision} · confidence {m.confidence or 0:.2f}"
            if m.faq_ids:
                detail += " · " + ", ".join(f"{i} {s:.2f}" for i, s in
                                            zip(m.faq_ids, m.scores, strict=False))
            if m.meta.get("rejected"):
                detail += f" · rejected: {m.meta['rejected']}"
            out.print(f"[dim]  ({shown(detail)} · {m.latency_ms or 0:.0f} ms)[/]")
    finally:
        await store.close()


def release(ctx: typer.Context, conversation_id: Annotated[str, typer.Argument(
        help="The handed-off conversation to give back to the bot.")]) -> None:
    """Give a handed-off conversation back to the bot, which answers it again."""
    with user_errors():
        settings = settings_of(ctx)
        was = asyncio.run(_release(settings.storage.database_url, conversation_id))
    name = shown(conversation_id)
    if was == "bot":
        out.print(f"conversation {name} was not handed off: the bot already answers it")
    else:
        out.print(f"conversation {name} is back with the bot (was {was})")


async def _release(url: str, conversation_id: str) -> str:
    """Set the conversation's status to bot; the status it had before."""
    from bot.storage import ConversationStore, mask_url
    from bot.types import ConversationStatus

    store = ConversationStore(url)
    try:
        await store.init()
        was = await store.conversation_status(conversation_id)
        if not await store.set_status(conversation_id, ConversationStatus.BOT):
            raise SupportbotError(f"no conversation '{conversation_id}' in {mask_url(url)}")
        return was.value
    finally:
        await store.close()
