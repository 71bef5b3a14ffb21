"""Assemble a running bot from settings: corpus, embedder, index, store, dialogue manager.

The core's composition root: the one module of the core that knows every part it wires
together (retrieval, generation, safety, storage, and the operators' FAQ additions, which feed
the index), so that the dialogue manager and the parts take what they use as arguments. The
channels and the cli call it; it imports neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bot.actions.book import declared_entries, load_book
from bot.dialogue import DialogueManager
from bot.dialogue.search import retrieve
from bot.errors import StorageError
from bot.generation.base import Generator
from bot.learning import UseLearning
from bot.operators.faq import FaqLearning
from bot.settings import ModelSettings, Settings
from bot.storage import ConversationStore
from retrieval.calibration import ensure_calibrated
from retrieval.embedder import Embedder, ProgressCallback, SentenceTransformerEmbedder
from retrieval.errors import IndexMissingError, IndexStaleError, IndexWriteError
from retrieval.index import FaqIndex

if TYPE_CHECKING:
    from bot.safety.layer import SafetyLayer

log = logging.getLogger(__name__)
# How often a running bot deletes customers' texts as written whose time is up. Expired texts
# are never shown in the meantime (the inbox reads only those not expired).
SWEEP_SECONDS = 600.0
RETRIEVAL_THREADS = 2  # the threads that embed, search and guard customers' messages
# What the start-up asks itself (not stored) so that the first customer's turn is as fast as
# later ones: a question of the sample FAQ's kind, without personal data.
WARM_UP_TEXT = "how do I change the delivery address of my order"


@dataclass
class Runtime:
    """The parts of a running bot; close() stops generation and releases model and database."""

    manager: DialogueManager
    store: ConversationStore
    index: FaqIndex
    learning: FaqLearning  # FAQ additions from the inbox
    use: UseLearning | None = None  # what customers' picks and ratings teach (bot/learning/)
    sweeper: asyncio.Task[None] | None = field(default=None)  # purges expired texts as written

    async def close(self) -> None:
        """Stop the sweeper and the generator's worker (releasing the model), then close the
        database."""
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
        self.manager.close()
        if self.manager.actions is not None:
            await self.manager.actions.aclose()
        await self.store.close()


async def sweep_originals(store: ConversationStore, every: float = SWEEP_SECONDS) -> None:
    """Delete expired texts as written now and every `every` seconds; a failure is logged
    and retried at the next round."""
    while True:
        try:
            purged = await store.purge_originals()
        except StorageError as exc:
            log.warning("texts as written not purged this round: %s", exc)
        else:
            if purged:
                log.info("purged %d customer texts as written (storage.original_text_hours)",
                         purged)
        await asyncio.sleep(every)


def outside_questions(settings: Settings) -> list[str]:
    """The out-of-scope questions retrieval.out_of_scope names (none for 'none')."""
    from retrieval.outside import read_questions

    choice = settings.retrieval.out_of_scope
    if choice == "none":
        return []
    return read_questions(None if choice == "bundled" else choice)


def configure_index(index: FaqIndex, settings: Settings) -> FaqIndex:
    """Apply the search-time settings (a saved or built index fits any of them): the scoring
    and, for the classifier, its out-of-scope class."""
    index.scoring = settings.retrieval.scoring
    index.outside = outside_questions(settings) if index.scoring == "classifier" else ()
    index.lexical = settings.retrieval.lexical
    index.target_precision = settings.retrieval.target_precision
    return index


def calibrate_index(index: FaqIndex, index_dir: Path | None = None) -> None:
    """Calibrate the configured index's answer threshold and margin unless the calibration
    saved with it still fits (retrieval.calibration); a new one is saved in `index_dir` (a
    read-only index only recalibrates at the next start)."""
    if ensure_calibrated(index) and index_dir is not None:
        with contextlib.suppress(IndexWriteError):
            index.save_meta(index_dir)


def open_index(settings: Settings, embedder: Embedder | None = None,
               progress: ProgressCallback | None = None
               ) -> tuple[FaqIndex, IndexMissingError | IndexStaleError | None]:
    """Open the FAQ's saved index; rebuild it when missing or stale and auto_rebuild is on.

    The FAQ file is parsed only when it changed since the index was built. Returns the index
    and why it was rebuilt (None when the saved one was used).
    """
    # The first torch work of the calling thread (the event loop's): keep its pool small.
    torch_threads(settings.retrieval.threads)()
    embedder = embedder or SentenceTransformerEmbedder(settings.retrieval.embedder)
    index, why = FaqIndex.open(settings.retrieval.faq_path, settings.retrieval.index_dir,
                               embedder, rebuild=settings.retrieval.auto_rebuild,
                               progress=progress, index_type=settings.retrieval.index_type,
                               extra=declared_entries(settings.actions,
                                                      settings.retrieval.faq_path))
    configure_index(index, settings)
    if index.scoring == "classifier":
        index.classifier_head()  # fitted now, not during the first customer's message
    calibrate_index(index, settings.retrieval.index_dir)
    return index, why


def generator_factory(model: ModelSettings,
                      on_load: Callable[[str], None] | None = None) -> Callable[[], Generator]:
    """A function that loads the configured generator when first called (not before)."""

    def load() -> Generator:
        from bot.generation.batching import BatchingGenerator

        if on_load is not None:
            on_load(model.openai.base_url if model.backend == "openai" else model.base_model)
        if model.backend == "openai":  # the server batches: one request per worker thread
            from bot.generation.openai_generator import OpenAIGenerator

            server = OpenAIGenerator.from_settings(model.openai, model.context_tokens)
            return BatchingGenerator(server, 1, 0.0, workers=model.openai.concurrency)
        if model.backend == "llama_cpp":  # one sequence at a time, at ~6x transformers' speed
            from bot.generation.llama_cpp_generator import LlamaCppGenerator

            llama = LlamaCppGenerator.load(model.base_model, adapter=model.adapter,
                                           threads=model.threads,
                                           context_tokens=model.context_tokens)
            return BatchingGenerator(llama, 1, 0.0)
        from bot.generation.transformers_generator import TransformersGenerator

        generator = TransformersGenerator.load(model.base_model, adapter=model.adapter,
                                               device=model.device, cache_dir=model.cache_dir,
                                               context_tokens=model.context_tokens)
        return BatchingGenerator(generator, model.max_batch, model.batch_window_ms / 1000,
                                 initializer=torch_threads(model.threads))

    return load


def torch_threads(threads: int) -> Callable[[], None]:
    """A thread initializer that sets torch's thread count for the thread it runs on.

    torch's intra-op thread count is per thread, and a thread pool that one thread has used
    slows every other thread's pool on a small machine (on 2 cores, generation after the main
    thread embedded took 6.5 s instead of 3.8 s: bench/README.md). So the event loop's thread
    and the retrieval workers use few threads, and the generation worker all cores. 0 means
    all the cores this process may use.
    """

    def initialize() -> None:
        import torch

        torch.set_num_threads(threads or len(os.sched_getaffinity(0)))

    return initialize


async def open_runtime(settings: Settings, index: FaqIndex,
                       generator: Callable[[], Generator] | None = None) -> Runtime:
    """Build the bot around an index; the database tables are created if missing.

    `generator` defaults to a lazy loader of the configured model.
    """
    store = ConversationStore(settings.storage.database_url,
                              settings.storage.turn_lock_seconds,
                              original_ttl=settings.storage.original_ttl())
    try:
        await store.init()
    except BaseException:
        await store.close()
        raise
    executor = ThreadPoolExecutor(RETRIEVAL_THREADS, thread_name_prefix="retrieval",
                                  initializer=torch_threads(settings.retrieval.threads))
    # presidio, spaCy and the detector load for a second or so: not on the event loop
    safety = await asyncio.to_thread(safety_layer, settings, index)
    manager = DialogueManager(index, store, settings.persona, settings.retrieval,
                              settings.dialogue, settings.model.generation,
                              generator or generator_factory(settings.model), executor, safety)
    # FAQ phrasings and entries operators added from the inbox, on top of the FAQ file
    learning = FaqLearning(store, index, safety, settings.operators.faq_sync_seconds)
    use = UseLearning(store, index, settings.learning, safety,
                      settings.operators.faq_sync_seconds)
    try:
        await learning.sync(force=True)
        await use.sync(force=True)
    except BaseException:
        manager.close()
        await store.close()
        raise

    async def sync() -> None:
        await learning.sync()
        await use.sync()

    manager.faq_sync = sync
    manager.learning = use if settings.learning.enabled else None
    # The declared actions (and the demo shop, for the sample FAQ): a thread to start
    manager.actions = await asyncio.to_thread(load_book, settings.actions,
                                              settings.retrieval.faq_path)
    await warm_up(manager, RETRIEVAL_THREADS)
    return Runtime(manager, store, index, learning, use,
                   asyncio.create_task(sweep_originals(store)))


async def warm_up(manager: DialogueManager, threads: int) -> None:
    """Do once, before the bot is ready, what a first turn would otherwise do first: run the
    input guards and a search on each retrieval thread (its torch thread pool starts), redact
    once on the default pool's thread, and compile the database's reads and a turn's writes (a
    rolled-back transaction). Measured on the sample FAQ, the first turn took 2-5x a later
    one without this (bench/README.md, bench_start.py); nothing is stored and no guard
    counts it."""
    loop = asyncio.get_running_loop()
    together = threading.Barrier(threads)  # each task on its own thread: all of them start

    def search() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait(timeout=10)
        vectors = None
        if manager.safety is not None:  # as a turn: the input guards embed, retrieval reuses
            vectors = manager.safety.check_input(WARM_UP_TEXT, "warm-up", "warm-up",
                                                 "warm-up").context.vectors
        retrieve(manager.index, manager.retrieval.top_k, WARM_UP_TEXT, [], vectors)

    await asyncio.gather(*(loop.run_in_executor(manager.executor, search)
                           for _ in range(threads)))
    if manager.safety is not None:
        await asyncio.to_thread(manager.safety.redact, WARM_UP_TEXT)
    with contextlib.suppress(StorageError):
        await manager.store.history("warm-up", limit=1)
        await manager.store.warm_up()


def safety_layer(settings: Settings, index: FaqIndex) -> SafetyLayer | None:
    """The guards the settings ask for (None when safety.enabled is off); they embed with the
    index's embedder, so that the message's vector is shared with retrieval."""
    if not settings.safety.enabled:
        return None
    from bot.safety.layer import SafetyLayer

    faq_texts = [text for e in index.entries for text in (e.answer, *e.questions)]
    return SafetyLayer(settings.safety, settings.persona, faq_texts,
                       embed=lambda text: index.embedder.embed([text])[0])
