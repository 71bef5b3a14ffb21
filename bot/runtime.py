"""Assemble a running bot from settings: corpus, embedder, index, store, dialogue manager."""

from __future__ import annotations

from dataclasses import dataclass

from bot.dialogue import DialogueManager
from bot.settings import Settings
from bot.storage import ConversationStore
from retrieval.corpus import load_faq
from retrieval.embedder import Embedder, ProgressCallback, SentenceTransformerEmbedder
from retrieval.index import FaqIndex


@dataclass
class Runtime:
    """The parts of a running bot; close() releases the database."""

    manager: DialogueManager
    store: ConversationStore
    index: FaqIndex

    async def close(self) -> None:
        """Release resources held by the runtime."""
        await self.store.close()


def open_index(settings: Settings, embedder: Embedder | None = None,
               progress: ProgressCallback | None = None) -> tuple[FaqIndex, str | None]:
    """Load the FAQ and its saved index; rebuild it when missing or stale and auto_rebuild is on.

    Returns the index and why it was rebuilt (None when the saved one was used).
    """
    entries = load_faq(settings.retrieval.faq_path)
    embedder = embedder or SentenceTransformerEmbedder(settings.retrieval.embedder)
    return FaqIndex.load_or_build(settings.retrieval.index_dir, entries, embedder,
                                  rebuild=settings.retrieval.auto_rebuild, progress=progress)


async def open_runtime(settings: Settings, index: FaqIndex) -> Runtime:
    """Build the bot around an index; the database tables are created if missing."""
    store = ConversationStore(settings.storage.database_url)
    await store.init()
    manager = DialogueManager(index, store, settings.persona, settings.retrieval,
                              settings.dialogue)
    return Runtime(manager, store, index)
