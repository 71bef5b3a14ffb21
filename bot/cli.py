"""The `supportbot` command line: config, index, ask, chat, serve, telegram, eval and (in
cli_train.py) train, merge and export."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.errors import SettingsError, SettingsWarning, SupportbotError
from bot.settings import (
    DEFAULT_CONFIG,
    Settings,
    check_networks,
    example_yaml,
    load_settings,
    settings_to_yaml,
)
from bot.types import BotReply, TextEvent, UserMessage
from retrieval.errors import IndexMissingError, IndexStaleError, RetrievalError
from training.errors import TrainingError

if TYPE_CHECKING:
    from bot.generation.base import Generator
    from bot.runtime import Runtime
    from retrieval.corpus import FaqEntry
    from retrieval.index import FaqIndex

app = typer.Typer(help="supportbot: a customer-service bot on your own hardware.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Inspect settings, or print an example file.", no_args_is_help=True)
app.add_typer(config_app, name="config")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

USER_ERRORS = (SupportbotError, RetrievalError, TrainingError)


@app.callback()
def _root(ctx: typer.Context, config: Annotated[Path | None, typer.Option(
        "--config", "-c", envvar="SUPPORTBOT_CONFIG",
        help=f"Settings file (default: ./{DEFAULT_CONFIG} if it exists).")] = None) -> None:
    """Read settings once, at the edge, and hand them to the command."""
    ctx.obj = config


def _settings(ctx: typer.Context) -> Settings:
    path = ctx.find_root().obj
    with _settings_warnings():
        return load_settings(path, explicit=path is not None)


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective settings (file, then SUPPORTBOT_* environment) as YAML.

    A password in storage.database_url is shown as ***.
    """
    with _user_errors():
        settings = _settings(ctx)
    sys.stdout.write(settings_to_yaml(settings))


@contextmanager
def _settings_warnings() -> Iterator[None]:
    """Show SettingsWarnings (say, a misspelt SUPPORTBOT_* name) in yellow, even before an error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SettingsWarning)
        try:
            yield
        finally:
            for warning in caught:
                if issubclass(warning.category, SettingsWarning):
                    err.print(f"[yellow]warning[/]: {escape(str(warning.message))}")
                else:
                    warnings.showwarning(warning.message, warning.category, warning.filename,
                                         warning.lineno)


@config_app.command("example")
def config_example() -> None:
    """Print an example supportbot.yaml: every key with its default and what it does."""
    sys.stdout.write(example_yaml())


@app.command()
def index(ctx: typer.Context, faq: Annotated[Path | None, typer.Option(
        help="FAQ file to index (default: retrieval.faq_path).")] = None) -> None:
    """Embed every FAQ phrasing with the configured embedder and save a FAISS index."""
    with _user_errors():
        settings = _settings(ctx)
        if faq is not None:
            settings.retrieval.faq_path = faq
        from retrieval.corpus import faq_file_hash, load_faq
        from retrieval.embedder import SentenceTransformerEmbedder
        from retrieval.index import FaqIndex

        started = time.perf_counter()
        entries = load_faq(settings.retrieval.faq_path)
        embedder = SentenceTransformerEmbedder(settings.retrieval.embedder)
        total = sum(len(e.questions) for e in entries)
        with _progress("embedding phrasings", total) as advance:
            built = FaqIndex.build(entries, embedder, progress=advance,
                                   index_type=settings.retrieval.index_type)
        # The file's hash lets the next start skip parsing an unchanged FAQ.
        built.faq_sha256 = faq_file_hash(settings.retrieval.faq_path)
        built.save(settings.retrieval.index_dir)
        err.print(f"indexed {len(entries)} entries ({built.size} phrasings, "
                  f"dimension {embedder.dimension}, embedder {embedder.name}) "
                  f"into {settings.retrieval.index_dir} in {time.perf_counter() - started:.1f} s")


@app.command()
def ask(ctx: typer.Context,
        question: Annotated[str, typer.Argument(help="The customer's question.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
        conversation_id: Annotated[str | None, typer.Option(
            help="Continue this conversation (default: a new one).")] = None,
        user_id: Annotated[str, typer.Option(help="Who is asking.")] = "cli",
        candidates: Annotated[int | None, typer.Option(
            min=1, max=16, help="Generate this many candidates (model.generation.n) and "
            "show them all with their grounding scores.")] = None) -> None:
    """Answer one question; with --json, stdout holds exactly one JSON object."""
    with _user_errors():
        settings = _settings(ctx)
        if candidates is not None:
            settings.model.generation.n = candidates
        message = UserMessage(text=question, channel="cli", user_id=user_id,
                              conversation_id=conversation_id or uuid.uuid4().hex)
        reply = asyncio.run(_ask(settings, message))
    if as_json:
        payload: dict[str, Any] = {"question": question, **reply.to_dict()}
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return
    _show_reply(settings, reply)
    for i, candidate in enumerate(reply.candidates if candidates else [], start=1):
        out.print(f"[dim]  candidate {i} (grounding {candidate.score:.2f}): "
                  f"{escape(candidate.text)}[/]")


async def _ask(settings: Settings, message: UserMessage) -> BotReply:
    runtime = await _open(settings)
    try:
        return await runtime.manager.handle(message)
    finally:
        await runtime.close()


@app.command()
def chat(ctx: typer.Context, user_id: Annotated[str, typer.Option(
        help="Who is chatting.")] = "terminal") -> None:
    """Chat in the terminal. /reset starts a new conversation, /quit leaves."""
    with _user_errors():
        settings = _settings(ctx)
        asyncio.run(_chat(settings, user_id))


async def _chat(settings: Settings, user_id: str) -> None:
    runtime = await _open(settings)
    persona = settings.persona
    conversation = uuid.uuid4().hex
    out.print(f"[bold green]{escape(persona.bot_name)}[/]: "
              f"{escape(persona.render(persona.greeting))}")
    out.print("[dim](/reset starts over, /quit leaves)[/]")
    try:
        while True:
            try:
                text = out.input("[bold]You[/]: ")
            except (EOFError, KeyboardInterrupt):
                out.print()
                break
            command = text.strip().lower()
            if command in ("/quit", "/exit"):
                break
            if command == "/reset":
                conversation = uuid.uuid4().hex
                out.print("[dim]-- new conversation --[/]")
                continue
            message = UserMessage(text=text, conversation_id=conversation, channel="terminal",
                                  user_id=user_id)
            reply: BotReply | None = None
            started = False
            async for event in runtime.manager.stream(message):
                if isinstance(event, TextEvent):  # verified text: it is never withdrawn
                    if not started:
                        out.print(f"[bold green]{escape(persona.bot_name)}[/]: ", end="")
                        started = True
                    out.file.write(event.text)
                    out.file.flush()
                else:
                    reply = event
            out.print()
            assert reply is not None
            _show_detail(reply)
            _show_problems(reply)
    finally:
        await runtime.close()


async def _open(settings: Settings) -> Runtime:
    """Open the index (rebuilding it with a progress bar if needed) and the runtime."""
    from bot.runtime import open_runtime

    built = _index(settings)
    return await open_runtime(settings, built, _generator(settings))


def _index(settings: Settings) -> FaqIndex:
    """The FAQ index, rebuilt with a progress bar when missing or stale."""
    from bot.runtime import open_index

    with _progress("building FAQ index", None) as advance:
        built, why = open_index(settings, progress=advance)
    if isinstance(why, IndexMissingError):
        err.print(f"[yellow]built the FAQ index[/] in {escape(str(why.index_dir))}")
    elif isinstance(why, IndexStaleError):
        err.print(f"[yellow]rebuilt the FAQ index[/] in {escape(str(why.index_dir))}: "
                  f"{escape('; '.join(why.reasons))}")
    return built


def _memory_index(settings: Settings, entries: list[FaqEntry]) -> FaqIndex:
    """An index of these entries for the eval commands, built in memory and never saved, with
    the configured embedder, index type, scoring and out-of-scope class."""
    from bot.runtime import configure_index, torch_threads
    from retrieval.embedder import SentenceTransformerEmbedder
    from retrieval.index import FaqIndex

    torch_threads(settings.retrieval.threads)()  # as open_index does for the event loop
    embedder = SentenceTransformerEmbedder(settings.retrieval.embedder)
    with _progress("embedding FAQ phrasings", sum(len(e.questions) for e in entries)
                   ) as advance:
        return configure_index(FaqIndex.build(entries, embedder, progress=advance,
                                              index_type=settings.retrieval.index_type),
                               settings)


def _generator(settings: Settings) -> Callable[[], Generator]:
    """The configured model's loader, saying on stderr when it loads (and converts)."""
    from bot.runtime import generator_factory

    def loading(name: str) -> None:
        from bot.generation.bundled import needs_conversion

        first = needs_conversion(name, settings.model.cache_dir)
        note = f" (first use: converting the bundled GGUF into {settings.model.cache_dir}, " \
            "~20 s, once)" if first else ""
        err.print(f"[dim]loading the model {escape(name)}{note}...[/]")

    return generator_factory(settings.model, loading)


@app.command()
def serve(ctx: typer.Context,
          host: Annotated[str | None, typer.Option(help="Address to listen on "
                                                   "[default: web.host, 127.0.0.1].")] = None,
          port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port "
                                                   "[default: web.port, 8000].")] = None,
          preload: Annotated[bool, typer.Option(help="Load the model before serving.")] = False,
          workers: Annotated[int | None, typer.Option(
              min=1, max=64, help="Server processes sharing the port [default: web.workers, "
              "1]; more than 1 needs PostgreSQL.")] = None,
          forwarded_allow_ips: Annotated[str | None, typer.Option(
              help="Your proxies' addresses or networks, comma-separated, whose "
              "X-Forwarded-For is believed [default: web.forwarded_allow_ips, none]; see "
              "docs/deploy.md.")] = None
          ) -> None:
    """Serve the web chat page, the web socket (/ws), REST (/v1) and /metrics."""
    with _user_errors():
        settings = _settings(ctx)
        proxies = settings.web.forwarded_allow_ips
        if forwarded_allow_ips is not None:
            try:
                proxies = check_networks([p.strip() for p in forwarded_allow_ips.split(",")
                                          if p.strip()])
            except ValueError as exc:
                raise SettingsError([f"--forwarded-allow-ips: {exc}"]) from None
        web = settings.web.model_copy(update={
            "host": host or settings.web.host, "port": port or settings.web.port,
            "preload": preload or settings.web.preload,
            "workers": workers or settings.web.workers, "forwarded_allow_ips": proxies})
        settings = settings.model_copy(update={"web": web})
        from bot.channels.serve import check_address
        from bot.channels.serve import serve as run_server

        if web.workers > 1:  # refused before anything slow
            from bot.channels.workers import check_database, serve_workers

            check_database(settings)
        check_address(web.host, web.port)
        if web.workers > 1:
            _index_apart(settings)  # built and saved once: the workers load the saved one
            err.print(f"[green]serving[/] http://{web.host}:{web.port} with {web.workers} "
                      "workers  [dim](chat page /, web socket /ws, inbox /operator, metrics "
                      "/metrics; Ctrl+C stops)[/]")
            serve_workers(settings)
            return
        built = _index(settings)
        err.print(f"[green]serving[/] http://{web.host}:{web.port}  "
                  "[dim](chat page /, web socket /ws, inbox /operator, metrics /metrics; "
                  "Ctrl+C stops)[/]")
        run_server(settings, built, _generator(settings))


def _index_apart(settings: Settings) -> None:
    """Open (or build and save) the FAQ index in a process of its own that then ends: the
    parent of several workers only supervises them, and would otherwise keep torch and the
    embedder (~600 MB) for nothing. Its errors are its one line on stderr and status 1."""
    import multiprocessing

    process = multiprocessing.get_context("spawn").Process(
        target=_index_or_exit, args=(settings,), name="supportbot-index")
    process.start()
    process.join()
    if process.exitcode != 0:
        raise typer.Exit(1)


def _index_or_exit(settings: Settings) -> None:
    try:
        with _user_errors():
            _index(settings)
    except typer.Exit as exc:  # not a traceback from multiprocessing
        sys.exit(exc.exit_code)


@app.command()
def telegram(ctx: typer.Context,
             mode: Annotated[str | None, typer.Option(
                 help="polling or webhook [default: telegram.mode, polling].")] = None) -> None:
    """Answer customers on Telegram (long polling, or a webhook: see the README)."""
    with _user_errors():
        settings = _settings(ctx)
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
        built = _index(settings)
        tg = settings.telegram

        def ready(service: Any) -> None:
            how = f"webhook {tg.webhook_url} (listening on {tg.webhook_listen}:" \
                f"{tg.webhook_port}{tg.webhook_path})" if tg.mode == "webhook" \
                else "long polling"
            err.print(f"[green]on Telegram[/] as @{escape(service.username)} by "
                      f"{escape(how)}  [dim](Ctrl+C stops)[/]")

        asyncio.run(run(settings, built, _generator(settings), on_ready=ready))


def _show_reply(settings: Settings, reply: BotReply) -> None:
    name = escape(settings.persona.bot_name)
    out.print(f"[bold green]{name}[/]: {escape(reply.text)}")
    _show_detail(reply)
    _show_problems(reply)


def _show_problems(reply: BotReply) -> None:
    """What went wrong behind a turn, for the operator at the terminal (stderr)."""
    for key, label in (("generation_error", "generation failed"), ("error", "turn failed"),
                       ("storage_error", "not stored")):
        if key in reply.meta:
            err.print(f"[yellow]{label}[/]: {escape(str(reply.meta[key]))}")


def _show_detail(reply: BotReply) -> None:
    detail = f"{reply.decision.value} · confidence {reply.confidence:.2f}"
    if reply.faq_ids:
        detail += " · " + ", ".join(reply.faq_ids)
    out.print(f"[dim]  ({escape(detail)} · {reply.latency_ms:.0f} ms)[/]")


@app.command()
def history(ctx: typer.Context,
            conversation_id: Annotated[str | None, typer.Argument(
                help="Show this conversation turn by turn (default: list recent ones).")] = None,
            last: Annotated[int, typer.Option(min=1, max=HISTORY_MAX, help="How many "
                                              "conversations to list, or messages to show.")
                            ] = 20) -> None:
    """Review stored conversations: what customers asked and what the bot decided."""
    with _user_errors():
        settings = _settings(ctx)
        asyncio.run(_history(settings, conversation_id, last))


HISTORY_MAX = 10_000  # keeps --last inside what every database accepts as a LIMIT


async def _history(settings: Settings, conversation_id: str | None, last: int) -> None:
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
                table.add_row(_shown(conversation.channel), _shown(conversation.user_id),
                              _shown(conversation.status),
                              f"{conversation.updated_at:%Y-%m-%d %H:%M:%S}", str(n),
                              _shown(conversation.id))
            out.print(table)
            return
        found = await store.get_conversation(conversation_id)
        if found is None:
            raise SupportbotError(f"no conversation '{conversation_id}' in "
                                  f"{mask_url(settings.storage.database_url)}")
        status = f"status {found.status}"
        if found.status_changed_at is not None:
            status += f" since {found.status_changed_at:%Y-%m-%d %H:%M:%S}"
        out.print(f"[bold]conversation[/] {_shown(found.id)} · {_shown(found.channel)} · "
                  f"user {_shown(found.user_id)} · {_shown(status)}")
        for m in await store.history(conversation_id, limit=last):
            if m.role == "user":
                out.print(f"[bold]customer[/] {m.created_at:%H:%M:%S}: {_shown(m.text)}")
                continue
            out.print(f"[bold green]bot[/] {m.created_at:%H:%M:%S}: {_shown(m.text)}")
            detail = f"{m.decision} · confidence {m.confidence or 0:.2f}"
            if m.faq_ids:
                detail += " · " + ", ".join(f"{i} {s:.2f}" for i, s in
                                            zip(m.faq_ids, m.scores, strict=False))
            if m.meta.get("rejected"):
                detail += f" · rejected: {m.meta['rejected']}"
            out.print(f"[dim]  ({_shown(detail)} · {m.latency_ms or 0:.0f} ms)[/]")
    finally:
        await store.close()


# C0 and C1 control characters (but newline and tab), DEL, and the bidirectional overrides that
# reorder what a terminal shows: a stored message must not drive the operator's terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _shown(text: object) -> str:
    """Stored text made safe to print: control characters as visible escapes, markup escaped."""
    def visible(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return escape(_CONTROL.sub(visible, str(text)))


db_app = typer.Typer(help="The conversation database: schema revisions, retention and "
                     "deletion.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Print the schema revision the configured database is at."""
    with _user_errors():
        settings = _settings(ctx)
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
    with _user_errors():
        settings = _settings(ctx)
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
    with _user_errors():
        settings = _settings(ctx)
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


eval_app = typer.Typer(help="Measure the bot on labelled data.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("safety")
def eval_safety(ctx: typer.Context,
                data: Annotated[Path, typer.Option(help="CSV or JSONL with text, label (1: must "
                                                   "be blocked) and optional category.")],
                as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")
                                   ] = False) -> None:
    """Detection, false positives, precision and latency of the input guards."""
    with _user_errors():
        settings = _settings(ctx)
        from bot.runtime import torch_threads
        from bot.safety.build import input_pipeline
        from bot.safety.evaluate import evaluate_safety, safety_markdown
        from retrieval.embedder import SentenceTransformerEmbedder

        torch_threads(settings.retrieval.threads)()  # as a retrieval worker embeds in a turn
        pipeline = input_pipeline(settings.safety)
        embedder = SentenceTransformerEmbedder(settings.retrieval.embedder)
        report = evaluate_safety(data, pipeline, lambda text: embedder.embed([text])[0])
    sys.stdout.write(json.dumps(report) + "\n" if as_json else safety_markdown(report))


@eval_app.command("retrieval")
def eval_retrieval(ctx: typer.Context,
                   queries: Annotated[Path, typer.Option(help="CSV or JSONL with query and "
                                                         "faq_id (empty: out of scope), or a "
                                                         "held-out YAML like data/faq_eval.yaml."
                                                         )],
                   faq: Annotated[Path | None, typer.Option(
                       help="FAQ file (default: retrieval.faq_path).")] = None,
                   as_json: Annotated[bool, typer.Option("--json", help="Print one JSON "
                                                         "object.")] = False,
                   out_dir: Annotated[Path | None, typer.Option(
                       "--out", help="Also write report.json, report.md and PNG plots here.")
                   ] = None) -> None:
    """Top-1, hit@k, MRR, the decision mix and out-of-scope detection of the FAQ retrieval at
    the configured thresholds, with a threshold sweep and query latency."""
    with _user_errors():
        settings = _settings(ctx)
        from retrieval.corpus import load_faq
        from retrieval.evaluate import evaluate_retrieval, retrieval_markdown, write_report
        from retrieval.metrics import Policy
        from retrieval.queries import read_queries

        r = settings.retrieval
        faq_path = faq or r.faq_path
        entries = load_faq(faq_path)
        labelled = read_queries(queries, {e.id for e in entries})
        built = _memory_index(settings, entries)
        policy = Policy(r.answer_threshold, r.suggest_threshold, r.max_suggestions, r.top_k,
                        r.answer_margin)
        with _progress("embedding queries", len(labelled)) as advance:
            evaluation = evaluate_retrieval(built, labelled, policy, progress=advance,
                                            sources={"faq": str(faq_path),
                                                     "queries": str(queries)})
        if out_dir is not None:
            for path in write_report(evaluation, out_dir):
                err.print(f"wrote {escape(str(path))}")
    report = evaluation.report
    sys.stdout.write(json.dumps(report) + "\n" if as_json else retrieval_markdown(report))


@eval_app.command("pii")
def eval_pii(ctx: typer.Context,
             data: Annotated[Path, typer.Option(help="JSONL with text and spans [{start, end, "
                                                "label}].")],
             as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")
                                ] = False) -> None:
    """Recall and precision of PII redaction per label."""
    with _user_errors():
        settings = _settings(ctx)
        from bot.safety.build import redactor_for
        from bot.safety.evaluate import evaluate_pii, pii_markdown

        report = evaluate_pii(data, redactor_for(settings.safety))
    sys.stdout.write(json.dumps(report) + "\n" if as_json else pii_markdown(report))


@app.command()
def release(ctx: typer.Context, conversation_id: Annotated[str, typer.Argument(
        help="The handed-off conversation to give back to the bot.")]) -> None:
    """Give a handed-off conversation back to the bot, which answers it again."""
    with _user_errors():
        settings = _settings(ctx)
        was = asyncio.run(_release(settings.storage.database_url, conversation_id))
    shown = _shown(conversation_id)
    if was == "bot":
        out.print(f"conversation {shown} was not handed off: the bot already answers it")
    else:
        out.print(f"conversation {shown} is back with the bot (was {was})")


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


@contextmanager
def _progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr that appears only once work is reported."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"),
                        TimeElapsedColumn(), console=err, transient=True)
    task = progress.add_task(description, total=total, rate="")
    started = time.perf_counter()
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        if not progress.live.is_started:
            progress.start()
        done += n
        rate = done / max(time.perf_counter() - started, 1e-9)
        progress.update(task, advance=n, rate=f"{rate:,.0f} phrasings/s")

    try:
        yield advance
    finally:
        if progress.live.is_started:
            progress.stop()


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn user-facing errors into a message on stderr and exit status 1, never a traceback."""
    try:
        yield
    except USER_ERRORS as exc:
        err.print(f"[bold red]error[/]: {escape(str(exc))}")
        raise typer.Exit(1) from None


# Commands in their own modules register themselves: `eval dialogue` (on eval_app), train,
# merge and export, tune-retriever, operator (bot/operators/cli.py).
from bot import cli_eval as _cli_eval  # noqa: E402,F401
from bot import cli_retrieval as _cli_retrieval  # noqa: E402,F401
from bot import cli_train as _cli_train  # noqa: E402,F401
from bot.operators import cli as _cli_operators  # noqa: E402,F401


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
