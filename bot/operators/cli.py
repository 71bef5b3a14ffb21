"""`supportbot operator add|list|remove`: the accounts of the humans who answer handed-off
conversations. Passwords are read hidden (twice) or from stdin, and only their hash is stored.

The database and hashing modules are imported by the commands, not here: every `supportbot`
command imports this module, and should start fast."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import timezone
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.markup import escape

from bot.cli import _settings, _user_errors, app, out
from bot.errors import SupportbotError

if TYPE_CHECKING:
    from bot.operators.store import OperatorStore

operator_app = typer.Typer(help="Operator accounts for the inbox (/operator/api/).",
                           no_args_is_help=True)
app.add_typer(operator_app, name="operator")
T = TypeVar("T")


async def _run(url: str, work: Callable[[OperatorStore], Awaitable[T]]) -> T:
    """Run `work` on the configured database, brought up to date first."""
    from bot.operators.store import OperatorStore
    from bot.storage import ConversationStore

    store = ConversationStore(url)
    try:
        await store.init()
        return await work(OperatorStore(store))
    finally:
        await store.close()


@operator_app.command("add")
def operator_add(ctx: typer.Context,
                 name: Annotated[str, typer.Argument(help="The operator's login name, shown "
                                                     "to customers with their replies.")],
                 password_stdin: Annotated[bool, typer.Option(
                     "--password-stdin", help="Read the password from the first line of "
                     "standard input (for scripts) instead of asking for it.")] = False) -> None:
    """Create an operator account."""
    from bot.operators.accounts import check_name, check_password, hash_password

    with _user_errors():
        settings = _settings(ctx)
        check_name(name)
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        check_password(password)
        hashed = hash_password(password)
        asyncio.run(_run(settings.storage.database_url, lambda o: o.add(name, hashed)))
    out.print(f"operator {escape(name)} added")


@operator_app.command("list")
def operator_list(ctx: typer.Context) -> None:
    """List the operator accounts."""
    with _user_errors():
        settings = _settings(ctx)
        accounts = asyncio.run(_run(settings.storage.database_url, lambda o: o.accounts()))
    if not accounts:
        out.print("no operators: add one with `supportbot operator add NAME`")
    for name, created in accounts:
        if created.tzinfo is not None:  # PostgreSQL answers in the session's time zone
            created = created.astimezone(timezone.utc)
        out.print(f"{escape(name)}  (added {created:%Y-%m-%d %H:%M} UTC)")


@operator_app.command("remove")
def operator_remove(ctx: typer.Context,
                    name: Annotated[str, typer.Argument(help="The operator to remove.")]
                    ) -> None:
    """Remove an operator account; their sessions stop working at once."""
    with _user_errors():
        settings = _settings(ctx)
        if not asyncio.run(_run(settings.storage.database_url, lambda o: o.remove(name))):
            raise SupportbotError(f"no operator named {name!r}")
    out.print(f"operator {escape(name)} removed")


__all__ = ["operator_app"]
