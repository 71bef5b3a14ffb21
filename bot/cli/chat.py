"""`supportbot ask` (one question) and `supportbot chat` (a conversation in the terminal)."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from bot.cli.common import JsonFlag, err, faq_index, model_loader, out, settings_of, user_errors
from bot.settings import Settings
from bot.types import BotReply, StatusEvent, TextEvent, UserMessage

if TYPE_CHECKING:
    from bot.runtime import Runtime


def ask(ctx: typer.Context,
        question: Annotated[str, typer.Argument(help="The customer's question.")],
        as_json: JsonFlag = False,
        conversation_id: Annotated[str | None, typer.Option(
            help="Continue this conversation (default: a new one).")] = None,
        user_id: Annotated[str, typer.Option(help="Who is asking.")] = "cli",
        candidates: Annotated[int | None, typer.Option(
            min=1, max=16, help="Generate this many candidates (model.generation.n) and "
            "show them all with their grounding scores.")] = None) -> None:
    """Answer one question; with --json, stdout holds exactly one JSON object."""
    with user_errors():
        settings = settings_of(ctx)
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
    """One turn through a runtime opened for it."""
    runtime = await _open(settings)
    try:
        return await runtime.manager.handle(message)
    finally:
        await runtime.close()


def chat(ctx: typer.Context, user_id: Annotated[str, typer.Option(
        help="Who is chatting.")] = "terminal") -> None:
    """Chat in the terminal. /reset starts a new conversation, /quit leaves."""
    with user_errors():
        settings = settings_of(ctx)
        asyncio.run(_chat(settings, user_id))


async def _chat(settings: Settings, user_id: str) -> None:
    """The terminal conversation: each reply streamed as its verified text arrives."""
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
                elif isinstance(event, StatusEvent):  # an action's call runs
                    out.print(f"[dim]{escape(event.text)}[/]")
                else:
                    reply = event
            out.print()
            assert reply is not None
            _show_detail(reply)
            _show_problems(reply)
    finally:
        await runtime.close()


async def _open(settings: Settings) -> Runtime:
    """Open the index (rebuilding it with a progress bar if needed) and the runtime; a model
    backend that is not installed is refused first."""
    from bot.runtime import open_runtime

    loader = model_loader(settings)
    built = faq_index(settings)
    return await open_runtime(settings, built, loader)


def _show_reply(settings: Settings, reply: BotReply) -> None:
    """The reply under the bot's name, its decision, and what went wrong behind it."""
    name = escape(settings.persona.bot_name)
    out.print(f"[bold green]{name}[/]: {escape(reply.text)}")
    _show_detail(reply)
    _show_problems(reply)


def _show_problems(reply: BotReply) -> None:
    """What went wrong behind a turn, for the operator at the terminal (stderr)."""
    meta = reply.meta
    for label, problem in (("generation failed", meta.get("generation_error")),
                           ("turn failed", meta.get("error")),
                           ("not stored", meta.get("storage_error"))):
        if problem is not None:
            err.print(f"[yellow]{label}[/]: {escape(problem)}")


def _show_detail(reply: BotReply) -> None:
    """The decision, confidence, FAQ entries and latency, dimmed."""
    detail = f"{reply.decision.value} · confidence {reply.confidence:.2f}"
    if reply.faq_ids:
        detail += " · " + ", ".join(reply.faq_ids)
    out.print(f"[dim]  ({escape(detail)} · {reply.latency_ms:.0f} ms)[/]")
