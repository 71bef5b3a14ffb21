"""`supportbot eval dialogue`: labelled queries through the whole bot, one conversation each,
in a throwaway database (the user's conversations and saved index are left as they are)."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.cli import (
    _generator,
    _index,
    _memory_index,
    _settings,
    _user_errors,
    err,
    eval_app,
)
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.eval_dialogue import DialogueEvaluation, DialogueRow
    from retrieval.index import FaqIndex
    from retrieval.offline.queries import LabelledQuery


@eval_app.command("dialogue")
def eval_dialogue(ctx: typer.Context,
                  queries: Annotated[Path, typer.Option(help="CSV or JSONL with query and "
                                                        "faq_id (empty: out of scope), or a "
                                                        "held-out YAML like "
                                                        "data/faq_eval.yaml.")],
                  faq: Annotated[Path | None, typer.Option(
                      help="FAQ file (default: retrieval.faq_path; another one is indexed in "
                      "memory, the saved index is left alone).")] = None,
                  as_json: Annotated[bool, typer.Option("--json", help="Print one JSON "
                                                        "object.")] = False,
                  out_dir: Annotated[Path | None, typer.Option(
                      "--out", help="Also write rows.jsonl, report.json and report.md here.")
                  ] = None,
                  limit: Annotated[int | None, typer.Option(
                      min=1, help="Only the first N queries (a quick run).")] = None) -> None:
    """Each query as a new conversation through the whole bot (guards, policy, generation):
    answered from the right entry or a wrong one, 'Did you mean' offering it or not, fallback;
    out-of-scope queries answered at all; answer precision and turn latency."""
    with _user_errors():
        settings = _settings(ctx)
        from bot.eval_dialogue import write_report
        from retrieval.corpus import load_faq
        from retrieval.offline.queries import read_queries

        configured = settings.retrieval.faq_path
        faq_path = faq or configured
        entries = load_faq(faq_path)  # the queries' faq_ids are checked before any model loads
        labelled = read_queries(queries, {e.id for e in entries})[:limit]
        settings.retrieval.faq_path = faq_path
        same = faq is None or faq.resolve() == configured.resolve()
        built = _index(settings) if same else _memory_index(settings, entries)
        sources = {"queries": str(queries), "faq": str(faq_path)}
        with tempfile.TemporaryDirectory(prefix="supportbot-eval-") as tmp:
            # The eval's conversations go to a database of their own, deleted afterwards.
            settings.storage.database_url = f"sqlite+aiosqlite:///{Path(tmp) / 'eval.db'}"
            evaluation = asyncio.run(_run(settings, built, labelled, sources))
        if out_dir is not None:
            for path in write_report(evaluation, out_dir):
                err.print(f"wrote {escape(str(path))}")
    from bot.eval_dialogue import dialogue_markdown

    report = evaluation.report
    sys.stdout.write(json.dumps(report) + "\n" if as_json else dialogue_markdown(report))


async def _run(settings: Settings, built: FaqIndex, labelled: list[LabelledQuery],
               sources: dict[str, str]) -> DialogueEvaluation:
    from bot.eval_dialogue import evaluate_dialogue, settings_used
    from bot.runtime import open_runtime

    runtime = await open_runtime(settings, built, _generator(settings))
    try:
        if settings.dialogue.middle == "generate":
            # Loaded before the first turn, so that no query's latency includes the loading.
            started = time.perf_counter()
            await asyncio.to_thread(lambda: runtime.manager.generator)
            err.print(f"[dim]model loaded in {time.perf_counter() - started:.1f} s[/]")
        with _per_query(len(labelled)) as done:
            return await evaluate_dialogue(runtime.manager, labelled, settings_used(settings),
                                           progress=done, sources=sources)
    finally:
        await runtime.close()


@contextmanager
def _per_query(total: int) -> Iterator[Callable[[DialogueRow], None]]:
    """A progress bar on stderr: queries done, their rate and how many were answered right."""
    progress = Progress(TextColumn("conversations"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[right]}"),
                        TimeElapsedColumn(), console=err, transient=True)
    task = progress.add_task("conversations", total=total, rate="", right="")
    started = time.perf_counter()
    right = 0

    def done(row: DialogueRow) -> None:
        nonlocal right
        right += row.outcome == "answered_right"
        finished = progress.tasks[0].completed + 1
        rate = finished / max(time.perf_counter() - started, 1e-9)
        progress.update(task, advance=1, rate=f"{rate:,.2f} queries/s",
                        right=f"{right} answered right")

    progress.start()
    try:
        yield done
    finally:
        progress.stop()
