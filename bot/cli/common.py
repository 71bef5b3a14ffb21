"""What every `supportbot` command shares: the consoles, reading the settings, showing user
errors, progress bars, and opening the FAQ index and the model the way a command needs them."""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.errors import SettingsWarning, SupportbotError
from bot.settings import Settings, load_settings
from retrieval.errors import IndexMissingError, IndexStaleError, RetrievalError

if TYPE_CHECKING:
    from bot.generation.base import Generator
    from retrieval.corpus import FaqEntry
    from retrieval.index import FaqIndex

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

# The errors a user can act on: shown as one line, never a traceback. training's errors join
# them once a command has loaded training (see user_errors).
USER_ERRORS: tuple[type[Exception], ...] = (SupportbotError, RetrievalError)

# The --json flag of the commands that print a report.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def user_error_types() -> tuple[type[Exception], ...]:
    """USER_ERRORS, and training's TrainingError if a command imported training (a training
    error cannot be raised otherwise, and `serve` or `chat` should not load training for it)."""
    training = sys.modules.get("training.errors")
    return (*USER_ERRORS, training.TrainingError) if training is not None else USER_ERRORS


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn user-facing errors into a message on stderr and exit status 1, never a traceback."""
    try:
        yield
    except user_error_types() as exc:  # looked up as the exception passes
        err.print(f"[bold red]error[/]: {escape(str(exc))}")
        raise typer.Exit(1) from None


@contextmanager
def settings_warnings() -> Iterator[None]:
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


def settings_of(ctx: typer.Context) -> Settings:
    """The settings from the file the root --config option named (or the default one)."""
    path = ctx.find_root().obj
    with settings_warnings():
        return load_settings(path, explicit=path is not None)


def print_report(report: dict[str, Any], as_json: bool,
                 markdown: Callable[[dict[str, Any]], str]) -> None:
    """An eval report on stdout: one JSON object with --json, else its markdown."""
    sys.stdout.write(json.dumps(report) + "\n" if as_json else markdown(report))


@contextmanager
def progress(description: str, total: int | None,
             unit: str = "phrasings") -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr that appears only once work is reported."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), console=err, transient=True)
    task = bar.add_task(description, total=total, rate="")
    started = time.perf_counter()
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        if not bar.live.is_started:
            bar.start()
        done += n
        rate = done / max(time.perf_counter() - started, 1e-9)
        bar.update(task, advance=n, rate=f"{rate:,.1f} {unit}/s")

    try:
        yield advance
    finally:
        if bar.live.is_started:
            bar.stop()


def faq_index(settings: Settings) -> FaqIndex:
    """The FAQ index, rebuilt with a progress bar when missing or stale."""
    from bot.runtime import open_index

    with progress("building FAQ index", None) as advance:
        built, why = open_index(settings, progress=advance)
    if isinstance(why, IndexMissingError):
        err.print(f"[yellow]built the FAQ index[/] in {escape(str(why.index_dir))}")
    elif isinstance(why, IndexStaleError):
        err.print(f"[yellow]rebuilt the FAQ index[/] in {escape(str(why.index_dir))}: "
                  f"{escape('; '.join(why.reasons))}")
    return built


def faq_entries(settings: Settings, faq_path: Path) -> list[FaqEntry]:
    """The FAQ file's entries and then its actions' (found by retrieval like entries), as the
    bot indexes them."""
    from bot.actions.book import declared_entries
    from retrieval.corpus import load_faq
    from retrieval.index.opening import with_extra

    return with_extra(load_faq(faq_path), declared_entries(settings.actions, faq_path), faq_path)


def memory_index(settings: Settings, entries: list[FaqEntry]) -> FaqIndex:
    """An index of these entries for the eval commands, built in memory and never saved, with
    the configured embedder, index type, scoring and out-of-scope class."""
    from bot.runtime import calibrate_index, configure_index, torch_threads
    from retrieval.embedder import SentenceTransformerEmbedder
    from retrieval.index import FaqIndex

    torch_threads(settings.retrieval.threads)()  # as open_index does for the event loop
    embedder = SentenceTransformerEmbedder(settings.retrieval.embedder)
    with progress("embedding FAQ phrasings", sum(len(e.questions) for e in entries)
                  ) as advance:
        built = configure_index(FaqIndex.build(entries, embedder, progress=advance,
                                               index_type=settings.retrieval.index_type),
                                settings)
    calibrate_index(built)  # as a served index is: the same effective thresholds
    return built


def check_backend(settings: Settings) -> None:
    """Refuse, before anything slow, a model.backend whose package this install left out."""
    if settings.model.backend == "llama_cpp":
        from bot.generation.llama_cpp_generator import check_installed

        check_installed()


def model_loader(settings: Settings) -> Callable[[], Generator]:
    """The configured model's loader, saying on stderr when it loads (and converts); refuses a
    backend that is not installed at once, not at the first turn."""
    from bot.runtime import generator_factory

    check_backend(settings)

    def loading(name: str) -> None:
        from bot.generation.bundled import needs_conversion

        first = needs_conversion(name, settings.model.cache_dir)
        note = f" (first use: converting the bundled GGUF into {settings.model.cache_dir}, " \
            "~20 s, once)" if first else ""
        err.print(f"[dim]loading the model {escape(name)}{note}...[/]")

    return generator_factory(settings.model, loading)


def quiet_transformers() -> None:
    """Our own progress bar and report say what happens; transformers' weight-loading bars
    and deprecation notices (for its own internals) would only interleave with them."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
