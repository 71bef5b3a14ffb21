"""`supportbot index`: embed the FAQ and save its FAISS index."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from bot.cli.common import err, progress, settings_of, user_errors


def index(ctx: typer.Context, faq: Annotated[Path | None, typer.Option(
        help="FAQ file to index (default: retrieval.faq_path).")] = None) -> None:
    """Embed every FAQ phrasing with the configured embedder and save a FAISS index."""
    with user_errors():
        settings = settings_of(ctx)
        if faq is not None:
            settings.retrieval.faq_path = faq
        from bot.actions.book import declared_entries
        from bot.dialogue.replies import thresholds
        from bot.runtime import calibrate_index, configure_index
        from retrieval.calibration import describe
        from retrieval.corpus import load_faq
        from retrieval.embedder import SentenceTransformerEmbedder
        from retrieval.index import FaqIndex
        from retrieval.index.opening import file_digest, with_extra

        started = time.perf_counter()
        faq_path = settings.retrieval.faq_path
        actions = declared_entries(settings.actions, faq_path)  # found like entries
        entries = with_extra(load_faq(faq_path), actions, faq_path)
        embedder = SentenceTransformerEmbedder(settings.retrieval.embedder)
        total = sum(len(e.questions) for e in entries)
        with progress("embedding phrasings", total) as advance:
            built = FaqIndex.build(entries, embedder, progress=advance,
                                   index_type=settings.retrieval.index_type)
        # The file's hash lets the next start skip parsing an unchanged FAQ.
        built.faq_sha256 = file_digest(faq_path, actions)
        # Calibrated now and saved with it, so that the next start need not (the head is
        # fitted for it, with the scoring and out-of-scope class the bot will serve with).
        configure_index(built, settings)
        calibrate_index(built)
        built.save(settings.retrieval.index_dir)
        also = f" and {len(actions)} actions" if actions else ""
        err.print(f"indexed {len(entries) - len(actions)} entries{also} ({built.size} phrasings, "
                  f"dimension {embedder.dimension}, embedder {embedder.name}) "
                  f"into {settings.retrieval.index_dir} in {time.perf_counter() - started:.1f} s")
        err.print("thresholds: " + describe(thresholds(settings.retrieval, built.calibration)))
