"""`supportbot eval safety|retrieval|pii|dialogue`: measure the bot on labelled data. The
offline tools (retrieval's evaluation, metrics and query files, the dialogue evaluation) are
imported by the commands, so that the other commands never load them.

`eval dialogue` sends labelled queries through the whole bot, one conversation each, in a
throwaway database (the user's conversations and saved index are left as they are)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.cli.common import (
    JsonFlag,
    err,
    faq_entries,
    faq_index,
    memory_index,
    model_loader,
    print_report,
    progress,
    settings_of,
    user_errors,
)
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.eval_dialogue import DialogueEvaluation, DialogueRow
    from bot.eval_script_run import ScriptsEvaluation
    from bot.eval_scripts import Script
    from retrieval.index import FaqIndex
    from retrieval.offline.queries import LabelledQuery

# A report, and the function that writes it as Markdown.
Measured = tuple[dict[str, Any], Callable[[dict[str, Any]], str]]
SafetyData = Annotated[Path, typer.Option(help="CSV or JSONL with text, label (1: must be "
                                          "blocked) and optional category.")]
PiiData = Annotated[Path, typer.Option(help="JSONL with text and spans [{start, end, label}].")]

eval_app = typer.Typer(help="Measure the bot on labelled data.", no_args_is_help=True)


@eval_app.command("safety")
def eval_safety(ctx: typer.Context, data: SafetyData, as_json: JsonFlag = False) -> None:
    """Detection, false positives, precision and latency of the input guards."""
    _measure(ctx, as_json, lambda settings: _safety(settings, data))


def _safety(settings: Settings, data: Path) -> Measured:
    """The input guards measured on the labelled file, and the report's Markdown writer."""
    from bot.runtime import torch_threads
    from bot.safety.build import input_pipeline
    from bot.safety.evaluate import evaluate_safety, safety_markdown
    from retrieval.embedder import SentenceTransformerEmbedder

    torch_threads(settings.retrieval.threads)()  # as a retrieval worker embeds in a turn
    pipeline = input_pipeline(settings.safety)
    embedder = SentenceTransformerEmbedder(settings.retrieval.embedder)
    return evaluate_safety(data, pipeline, lambda text: embedder.embed([text])[0]), \
        safety_markdown


@eval_app.command("retrieval")
def eval_retrieval(ctx: typer.Context,
                   queries: Annotated[Path, typer.Option(help="CSV or JSONL with query and "
                                                         "faq_id (empty: out of scope), or a "
                                                         "held-out YAML like data/faq_eval.yaml."
                                                         )],
                   faq: Annotated[Path | None, typer.Option(
                       help="FAQ file (default: retrieval.faq_path).")] = None,
                   as_json: JsonFlag = False,
                   out_dir: Annotated[Path | None, typer.Option(
                       "--out", help="Also write report.json, report.md and PNG plots here.")
                   ] = None) -> None:
    """Top-1, hit@k, MRR, the decision mix and out-of-scope detection of the FAQ retrieval at
    the configured thresholds, with a threshold sweep and query latency."""
    with user_errors():
        settings = settings_of(ctx)
        from retrieval.offline.evaluate import evaluate_retrieval, retrieval_markdown, write_report
        from retrieval.offline.metrics import Policy
        from retrieval.offline.queries import read_queries

        r = settings.retrieval
        faq_path = faq or r.faq_path
        entries = faq_entries(settings, faq_path)
        labelled = read_queries(queries, {e.id for e in entries})
        built = memory_index(settings, entries)
        from bot.dialogue.replies import thresholds

        t = thresholds(r, built.calibration)  # calibrated unless set explicitly
        policy = Policy(t.answer_threshold, t.suggest_threshold, r.max_suggestions, r.top_k,
                        t.answer_margin)
        with progress("embedding queries", len(labelled)) as advance:
            evaluation = evaluate_retrieval(built, labelled, policy, progress=advance,
                                            sources={"faq": str(faq_path),
                                                     "queries": str(queries)})
        if out_dir is not None:
            for path in write_report(evaluation, out_dir):
                err.print(f"wrote {escape(str(path))}")
    print_report(evaluation.report, as_json, retrieval_markdown)


@eval_app.command("pii")
def eval_pii(ctx: typer.Context, data: PiiData, as_json: JsonFlag = False) -> None:
    """Recall and precision of PII redaction per label."""
    _measure(ctx, as_json, lambda settings: _pii(settings, data))


def _pii(settings: Settings, data: Path) -> Measured:
    """The configured redactor measured on the labelled file, and the report's Markdown writer."""
    from bot.safety.build import redactor_for
    from bot.safety.evaluate import evaluate_pii, pii_markdown

    return evaluate_pii(data, redactor_for(settings.safety)), pii_markdown


def _measure(ctx: typer.Context, as_json: bool, measure: Callable[[Settings], Measured]
             ) -> None:
    """Measure with the settings (a user error is one line on stderr), then print the report."""
    with user_errors():
        report, markdown = measure(settings_of(ctx))
    print_report(report, as_json, markdown)


@eval_app.command("dialogue")
def eval_dialogue(ctx: typer.Context,
                  queries: Annotated[Path | None, typer.Option(
                      help="CSV or JSONL with query and faq_id (empty: out of scope), or a "
                      "held-out YAML like data/faq_eval.yaml.")] = None,
                  scripts: Annotated[Path | None, typer.Option(
                      help="Dialogue scripts (YAML like data/dialogue_scripts.yaml): "
                      "multi-turn conversations with what each reply must show, instead of "
                      "--queries.")] = None,
                  faq: Annotated[Path | None, typer.Option(
                      help="FAQ file (default: retrieval.faq_path; another one is indexed in "
                      "memory, the saved index is left alone).")] = None,
                  as_json: JsonFlag = False,
                  out_dir: Annotated[Path | None, typer.Option(
                      "--out", help="Also write rows.jsonl (turns.jsonl with --scripts), "
                      "report.json and report.md here.")] = None,
                  limit: Annotated[int | None, typer.Option(
                      min=1, help="Only the first N queries or scripts (a quick run).")
                  ] = None) -> None:
    """Each query as a new conversation through the whole bot (guards, policy, generation,
    actions): answered from the right entry or a wrong one, 'Did you mean' offering it or not,
    fallback; out-of-scope queries answered at all; answer precision and turn latency. With
    --scripts: each script's conversation, pass or fail per script, API calls per conversation
    and action-turn latency."""
    if (queries is None) == (scripts is None):
        err.print("[bold red]error[/]: give either --queries or --scripts")
        raise typer.Exit(2)
    if scripts is not None:
        _eval_scripts(ctx, scripts, faq, as_json, out_dir, limit)
        return
    assert queries is not None
    with user_errors():
        settings = settings_of(ctx)
        from bot.eval_dialogue import write_report
        from retrieval.offline.queries import read_queries

        configured = settings.retrieval.faq_path
        faq_path = faq or configured
        # the queries' faq_ids (an action's id too) are checked before any model loads
        entries = faq_entries(settings, faq_path)
        labelled = read_queries(queries, {e.id for e in entries})[:limit]
        settings.retrieval.faq_path = faq_path
        same = faq is None or faq.resolve() == configured.resolve()
        built = faq_index(settings) if same else memory_index(settings, entries)
        sources = {"queries": str(queries), "faq": str(faq_path)}
        with tempfile.TemporaryDirectory(prefix="supportbot-eval-") as tmp:
            # The eval's conversations go to a database of their own, deleted afterwards.
            settings.storage.database_url = f"sqlite+aiosqlite:///{Path(tmp) / 'eval.db'}"
            evaluation = asyncio.run(_run(settings, built, labelled, sources))
        if out_dir is not None:
            for path in write_report(evaluation, out_dir):
                err.print(f"wrote {escape(str(path))}")
    from bot.eval_dialogue import dialogue_markdown

    print_report(evaluation.report, as_json, dialogue_markdown)


def _eval_scripts(ctx: typer.Context, path: Path, faq: Path | None, as_json: bool,
                  out_dir: Path | None, limit: int | None) -> None:
    """`eval dialogue --scripts`: the scripts checked before any model loads, then run in a
    throwaway database; the report printed (and written with --out)."""
    with user_errors():
        settings = settings_of(ctx)
        from bot.actions.book import ACTION_TAG
        from bot.eval_script_run import write_report
        from bot.eval_scripts import read_scripts

        configured = settings.retrieval.faq_path
        faq_path = faq or configured
        entries = faq_entries(settings, faq_path)
        actions = {e.id for e in entries if ACTION_TAG in e.tags}
        scripts = read_scripts(path, {e.id for e in entries}, actions)[:limit]
        settings.retrieval.faq_path = faq_path
        same = faq is None or faq.resolve() == configured.resolve()
        built = faq_index(settings) if same else memory_index(settings, entries)
        sources = {"scripts_file": str(path), "faq": str(faq_path)}
        with tempfile.TemporaryDirectory(prefix="supportbot-eval-") as tmp:
            settings.storage.database_url = f"sqlite+aiosqlite:///{Path(tmp) / 'eval.db'}"
            evaluation = asyncio.run(_run_scripts(settings, built, scripts, sources))
        if out_dir is not None:
            for path_written in write_report(evaluation, out_dir):
                err.print(f"wrote {escape(str(path_written))}")
    from bot.eval_script_run import scripts_markdown

    print_report(evaluation.report, as_json, scripts_markdown)


async def _run_scripts(settings: Settings, built: FaqIndex, scripts: list[Script],
                       sources: dict[str, str]) -> ScriptsEvaluation:
    """Every script through a runtime on the throwaway database, with a progress bar."""
    from bot.eval_script_run import evaluate_scripts
    from bot.runtime import open_runtime

    runtime = await open_runtime(settings, built, model_loader(settings))
    try:
        if settings.dialogue.middle == "generate":
            await asyncio.to_thread(lambda: runtime.manager.generator)
        with progress("scripts", len(scripts), "scripts") as advance:
            return await evaluate_scripts(runtime.manager, scripts, sources,
                                          progress=lambda _rows: advance(1))
    finally:
        await runtime.close()


async def _run(settings: Settings, built: FaqIndex, labelled: list[LabelledQuery],
               sources: dict[str, str]) -> DialogueEvaluation:
    """Every labelled query through a runtime on the throwaway database, with a progress bar."""
    from bot.eval_dialogue import evaluate_dialogue, settings_used
    from bot.runtime import open_runtime

    runtime = await open_runtime(settings, built, model_loader(settings))
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
    bar = Progress(TextColumn("conversations"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[right]}"),
                   TimeElapsedColumn(), console=err, transient=True)
    task = bar.add_task("conversations", total=total, rate="", right="")
    started = time.perf_counter()
    right = 0

    def done(row: DialogueRow) -> None:
        nonlocal right
        right += row.outcome == "answered_right"
        finished = bar.tasks[0].completed + 1
        rate = finished / max(time.perf_counter() - started, 1e-9)
        bar.update(task, advance=1, rate=f"{rate:,.2f} queries/s",
                        right=f"{right} answered right")

    bar.start()
    try:
        yield done
    finally:
        bar.stop()


@eval_app.command("learning")
def eval_learning(ctx: typer.Context,
                  queries: Annotated[Path, typer.Option(help="CSV or JSONL with query and faq_id "
                                                        "(empty: out of scope), replayed in "
                                                        "order as new customers.")],
                  faq: Annotated[Path | None, typer.Option(
                      help="FAQ file (default: retrieval.faq_path); indexed afresh in memory, "
                      "the saved index is left alone.")] = None,
                  window: Annotated[int, typer.Option(min=10, help="Queries per window.")] = 500,
                  adversarial: Annotated[float, typer.Option(
                      min=0.0, max=1.0, help="Share of customers who pick a wrong option when "
                      "offered and rate wrong answers up.")] = 0.0,
                  operator_rate: Annotated[float, typer.Option(
                      min=0.0, max=1.0, help="Share of fallbacks an operator labels.")] = 0.0,
                  down_rate: Annotated[float, typer.Option(
                      min=0.0, max=1.0, help="Share of wrong direct answers rated down.")] = 0.5,
                  up_rate: Annotated[float, typer.Option(
                      min=0.0, max=1.0, help="Share of right direct answers rated up.")] = 0.1,
                  seed: Annotated[int, typer.Option(help="Seed of the customers' draws.")] = 0,
                  shuffle: Annotated[bool, typer.Option(
                      "--shuffle", help="Replay the queries in a seeded random order (files "
                      "grouped by entry, like the Banking77 one, are not a day's traffic).")
                  ] = False,
                  limit: Annotated[int | None, typer.Option(
                      min=1, help="Only the first N queries (a quick run).")] = None,
                  as_json: JsonFlag = False,
                  out_dir: Annotated[Path | None, typer.Option(
                      "--out", help="Also write report.json, report.md and learning.png here.")
                  ] = None) -> None:
    """Replay the queries as customers of a fresh bot that learns from their picks, ratings and
    operators' labels: per window, the answered share, answer precision, 'Did you mean' and
    fallback shares, and the phrasings learnt so far."""
    with user_errors():
        settings = settings_of(ctx)
        from bot.eval_learning import Customers, learning_markdown, report, write_report
        from retrieval.offline.queries import read_queries

        faq_path = faq or settings.retrieval.faq_path
        entries = faq_entries(settings, faq_path)
        labelled = read_queries(queries, {e.id for e in entries})
        if shuffle:
            import random

            random.Random(seed).shuffle(labelled)
        labelled = labelled[:limit]
        settings.learning.enabled = True
        settings.dialogue.middle = "clarify"  # the learning loop, not generation, is measured
        customers = Customers(down_rate, up_rate, operator_rate, adversarial, seed)
        built = memory_index(settings, entries)
        used = {"window": window, "adversarial": adversarial, "operator_rate": operator_rate,
                "down_rate": down_rate, "up_rate": up_rate, "seed": seed, "shuffle": shuffle,
                "confirmations": settings.learning.confirmations,
                "similarity": settings.learning.similarity,
                "embedder": settings.retrieval.embedder, "scoring": settings.retrieval.scoring}
        with tempfile.TemporaryDirectory(prefix="supportbot-eval-") as tmp:
            settings.storage.database_url = f"sqlite+aiosqlite:///{Path(tmp) / 'eval.db'}"
            windows = asyncio.run(_replay(settings, built, labelled, customers, window))
        data = report(windows, used, {"queries": str(queries), "faq": str(faq_path)})
        if out_dir is not None:
            for path in write_report(data, out_dir):
                err.print(f"wrote {escape(str(path))}")
    print_report(data, as_json, learning_markdown)


async def _replay(settings: Settings, built: FaqIndex, labelled: list[LabelledQuery],
                  customers: Any, window: int) -> list[Any]:
    """The replay on a runtime over the throwaway database, with a progress bar."""
    from datetime import datetime, timezone

    from bot.eval_learning import Clock, replay
    from bot.runtime import open_runtime

    settings.operators.faq_sync_seconds = 0
    runtime = await open_runtime(settings, built, model_loader(settings))
    clock = Clock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert runtime.use is not None
    runtime.use.signals.clock = clock
    try:
        with progress("customers", len(labelled), "customers") as advance:
            return await replay(runtime, labelled, customers, window,
                                progress=lambda _right: advance(1), clock=clock)
    finally:
        await runtime.close()
