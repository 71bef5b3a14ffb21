"""`supportbot operator add|list|remove|faq`: the accounts of the humans who answer handed-off
conversations. Passwords are read hidden (twice) or from stdin, and only their hash is stored.

Also `supportbot report`: the handoffs, and the questions behind them.

The database and hashing modules are imported by the commands, not here: every `supportbot`
command imports this module, and should start fast."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import timezone
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape

from bot.cli.common import err, out, settings_of, user_errors
from bot.errors import SupportbotError

if TYPE_CHECKING:
    from bot.learning import Learnt, UseLearning
    from bot.operators.store import OperatorStore
    from bot.settings import Settings

operator_app = typer.Typer(help="Operator accounts for the inbox (/operator/api/), and the "
                           "FAQ additions they made there.",
                           no_args_is_help=True)
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

    with user_errors():
        settings = settings_of(ctx)
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
    with user_errors():
        settings = settings_of(ctx)
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
    with user_errors():
        settings = settings_of(ctx)
        if not asyncio.run(_run(settings.storage.database_url, lambda o: o.remove(name))):
            raise SupportbotError(f"no operator named {name!r}")
    out.print(f"operator {escape(name)} removed")


@operator_app.command("faq")
def operator_faq(ctx: typer.Context,
                 removed: Annotated[bool, typer.Option(
                     "--removed", help="Also the additions taken back.")] = False,
                 out_of_scope: Annotated[bool, typer.Option(
                     "--out-of-scope", help="Instead, the questions marked 'not our topic', one "
                     "per line: a retrieval.out_of_scope file.")] = False) -> None:
    """Print the FAQ entries and phrasings operators added in the inbox, as FAQ YAML to merge
    into the FAQ file (the bot serves them already, on top of the file)."""
    from bot.operators.faq import OUT_OF_SCOPE, additions_yaml, out_of_scope_lines, stored_additions

    with user_errors():
        settings = settings_of(ctx)
        found = asyncio.run(_run(settings.storage.database_url,
                                 lambda store: stored_additions(store.conversations, removed)))
        outside = sum(1 for a in found if a.entry_id == OUT_OF_SCOPE)
        if out_of_scope:
            if not outside:
                print("# no questions marked out of scope", file=sys.stderr)
            sys.stdout.write(out_of_scope_lines(found))
            return
        if len(found) == outside:
            print("# no FAQ additions", file=sys.stderr)
        else:
            sys.stdout.write(additions_yaml(found))
        if outside:
            print(f"# {outside} questions marked out of scope: supportbot operator faq "
                  "--out-of-scope", file=sys.stderr)


learnt_app = typer.Typer(help="What the bot learnt from use (docs/learning.md): list the learnt "
                         "phrasings, candidates and doubts; approve or remove one.")
operator_app.add_typer(learnt_app, name="learnt")
_ENTRY = Annotated[str, typer.Option("--entry", help="The FAQ entry's id.")]
_WORDING = Annotated[str, typer.Argument(help="The customers' wording, as listed.")]
_BY = Annotated[str, typer.Option("--by", help="Who reviews it (stored with the review).")]


def _learning(settings: Settings, work: Callable[[UseLearning], Awaitable[T]]) -> T:
    """Run `work` on the learning of the configured database and index (opened, or rebuilt,
    as the other commands do; the inbox's FAQ additions applied, so their entries count)."""
    from bot.cli.common import faq_index
    from bot.learning import UseLearning
    from bot.operators.faq import FaqLearning
    from bot.storage import ConversationStore

    index = faq_index(settings)

    async def run() -> T:
        store = ConversationStore(settings.storage.database_url)
        try:
            await store.init()
            await FaqLearning(store, index).sync(force=True)
            use = UseLearning(store, index, settings.learning)
            await use.sync(force=True)
            return await work(use)
        finally:
            await store.close()

    return asyncio.run(run())


@learnt_app.callback(invoke_without_command=True)
def operator_learnt(ctx: typer.Context,
                    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on "
                                                          "stdout.")] = False,
                    as_yaml: Annotated[bool, typer.Option(
                        "--yaml", help="Only the learnt phrasings, as FAQ YAML to merge into "
                        "the FAQ file (grouped under their entry's id).")] = False) -> None:
    """List what the bot learnt: learnt phrasings, doubts, removed ones, candidates."""
    if ctx.invoked_subcommand is not None:
        return
    import json

    from bot.learning.listing import learnt_yaml, listed

    async def listing(use: UseLearning) -> dict[str, Any]:
        return listed(use) | {"yaml": learnt_yaml(use.learnt)}

    with user_errors():
        settings = settings_of(ctx)
        found = _learning(settings, listing)
    if as_yaml:
        if not found["yaml"]:
            print("# nothing learnt yet", file=sys.stderr)
        sys.stdout.write(found["yaml"])
        return
    found.pop("yaml")
    if as_json:
        print(json.dumps(found, ensure_ascii=False))
        return
    if not found["enabled"]:
        err.print("[yellow]learning.enabled is false[/]: nothing is learnt")
    if not found["items"]:
        out.print("nothing learnt yet, and no candidates")
        return
    from rich.table import Table

    table = Table("state", "wording", "entry", "net", "for", "against", "taught by",
                  title=f"What the bot learnt ({found['total']}, at most {found['limit']} shown)")
    for item in found["items"]:
        table.add_row(item["state"], escape(item["wording"]), escape(item["entry_id"]),
                      f"{item['net']:g}", str(item["sources"]), str(item["against"]),
                      escape(item["reviewed_by"]))
    out.print(table)


def _review(ctx: typer.Context, wording: str, entry: str, decision: str, by: str) -> None:
    from bot.learning.listing import reviewed

    async def review(use: UseLearning) -> Learnt:
        try:
            return await reviewed(use, wording, entry, decision, by)
        except KeyError:
            raise SupportbotError(f"nothing learnt or signalled for {wording!r} as entry "
                                  f"{entry!r}: see `supportbot operator learnt`") from None
        except ValueError as exc:
            raise SupportbotError(str(exc)) from None

    with user_errors():
        settings = settings_of(ctx)
        item = _learning(settings, review)
    out.print(f"'{escape(item.wording)}' as entry {escape(item.entry_id)}: {item.state} "
              "(this process; the running bot picks it up at its next sync)")


@learnt_app.command("approve")
def operator_learnt_approve(ctx: typer.Context, wording: _WORDING, entry: _ENTRY,
                            by: _BY = "cli") -> None:
    """Approve a wording: the bot answers it from the entry."""
    from bot.learning.trust import APPROVED

    _review(ctx, wording, entry, APPROVED, by)


@learnt_app.command("remove")
def operator_learnt_remove(ctx: typer.Context, wording: _WORDING, entry: _ENTRY,
                           by: _BY = "cli") -> None:
    """Remove a wording: the bot stops answering from it."""
    from bot.learning.trust import REMOVED

    _review(ctx, wording, entry, REMOVED, by)


def report(ctx: typer.Context,
           days: Annotated[float | None, typer.Option(min=0, help="Only conversations active in "
                                                      "the last DAYS days (default: all).")
                           ] = None,
           top: Annotated[int, typer.Option(min=1, max=100, help="Question groups to show.")
                          ] = 10,
           as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")
                              ] = False) -> None:
    """Handoffs: how often, how long to the first operator reply, the questions behind them."""
    import json
    from datetime import datetime, timedelta

    with user_errors():
        settings = settings_of(ctx)
        from bot.operators.report import cluster_questions, collect
        from bot.runtime import open_index

        since = datetime.now(timezone.utc) - timedelta(days=days) if days is not None else None
        made = asyncio.run(_run(settings.storage.database_url,
                                lambda store: collect(store.conversations, since,
                                                      settings.dialogue.handoff_keywords)))
        if any(h.question for h in made.handoffs):
            index, _ = open_index(settings)
            cluster_questions(made, index, top=top)
    figures = made.to_dict()
    if as_json:
        print(json.dumps(figures, ensure_ascii=False))
        return
    rate, waits = figures["handoff_rate"], figures["first_reply_seconds"]

    def minutes(seconds: float | None) -> str:
        return "-" if seconds is None else f"{seconds / 60:.1f} min"

    out.print(f"conversations: {figures['conversations']}, handed to a human: "
              f"{figures['handoffs']} ({rate:.1%}); asked for a human straight away: "
              f"{figures['asked_for_human_directly']}")
    out.print(f"first operator reply: {figures['answered_by_operator']} answered, median "
              f"{minutes(waits['median'])}, 90% within {minutes(waits['p90'])}")
    if figures["clusters"]:
        from rich.table import Table

        table = Table("handoffs", "question (example)", "nearest FAQ entry", "score",
                      title="Questions most often handed to a human: FAQ candidates")
        for group in figures["clusters"]:
            table.add_row(str(group["count"]), escape(group["example"]),
                          escape(str(group["nearest_faq"])), f"{group['nearest_score']:.2f}")
        out.print(table)

