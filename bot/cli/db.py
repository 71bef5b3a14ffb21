"""`supportbot db current|upgrade|purge`: the conversation database's schema revision,
retention and deletion."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.markup import escape

from bot.cli.common import out, settings_of, user_errors
from bot.errors import SupportbotError
from bot.settings import Settings

db_app = typer.Typer(help="The conversation database: schema revisions, retention and "
                     "deletion.", no_args_is_help=True)


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Print the schema revision the configured database is at."""
    with user_errors():
        settings = settings_of(ctx)
        current, head = asyncio.run(_db_revisions(settings.storage.database_url))
    if current == head:
        out.print(f"{current} (head)")
    else:
        out.print(f"{current or 'none'} (head is {head}: run `supportbot db upgrade`)")


async def _db_revisions(url: str, upgrade: bool = False) -> tuple[str | None, str | None]:
    """The database's revision, and the head's; with `upgrade`, the revision before and after
    bringing it to the head."""
    from bot.storage import ConversationStore

    store = ConversationStore(url)
    try:
        before = await store.revision()
        if not upgrade:
            return before, store.head_revision()
        await store.init()
        return before, await store.revision()
    finally:
        await store.close()


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Bring the configured database to the newest schema; print the revision before and after."""
    with user_errors():
        settings = settings_of(ctx)
        before, after = asyncio.run(_db_revisions(settings.storage.database_url,
                                                  upgrade=True))
    from bot.storage import mask_url

    where = escape(mask_url(settings.storage.database_url))
    if before == after:
        out.print(f"{where} is already at {after} (head)")
    else:
        out.print(f"upgraded {where} from {before or 'none'} to {after} (head)")


@db_app.command("purge")
def db_purge(ctx: typer.Context,
             conversation: Annotated[list[str] | None, typer.Option(
                 help="Also delete this conversation and everything stored of it (a "
                      "customer's erasure request); repeat for several.")] = None,
             user: Annotated[str | None, typer.Option(
                 help="Also delete every conversation of this user id (a Telegram chat id, "
                      "'web' conversations have their own ids: use --conversation).")] = None,
             channel: Annotated[str | None, typer.Option(
                 help="With --user: only that channel's conversations.")] = None,
             yes: Annotated[bool, typer.Option("--yes", help="Delete conversations without "
                                               "asking.")] = False) -> None:
    """Delete customers' texts as written whose time is up (storage.original_text_hours);
    with --conversation or --user, delete those conversations entirely."""
    with user_errors():
        settings = settings_of(ctx)
        purged, forgotten = asyncio.run(_purge(settings, conversation or [], user, channel, yes))
    out.print(f"deleted {purged} expired text(s) as written")
    if forgotten is not None:
        out.print("deleted " + ", ".join(f"{n} {kind}" for kind, n in forgotten.items()))


async def _purge(settings: Settings, conversations: list[str], user: str | None,
                 channel: str | None, yes: bool) -> tuple[int, dict[str, int] | None]:
    """Purge expired originals; then forget the conversations named (after confirmation)."""
    from bot.storage import ConversationStore

    if channel is not None and user is None:
        raise typer.BadParameter("--channel needs --user")
    store = ConversationStore(settings.storage.database_url,
                              original_ttl=settings.storage.original_ttl())
    try:
        await store.init()
        purged = await store.purge_originals()
        ids = list(dict.fromkeys(conversations))
        if user is not None:
            ids += [i for i in await store.conversations_of(user, channel) if i not in ids]
        if not conversations and user is None:
            return purged, None
        if not ids:
            raise SupportbotError(f"no conversation of user {user!r} to delete")
        if not yes and not typer.confirm(f"Delete {len(ids)} conversation(s) and everything "
                                         "stored of them?"):
            raise typer.Exit(1)
        return purged, await store.forget(ids)
    finally:
        await store.close()
