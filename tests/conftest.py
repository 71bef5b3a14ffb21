"""Shared fixtures: the real bundled embedder, the sample FAQ, temp databases and config files."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

from retrieval.corpus import FaqEntry, load_faq
from retrieval.embedder import SentenceTransformerEmbedder
from retrieval.index import FaqIndex

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FAQ = ROOT / "data" / "faq.yaml"


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    """The bundled all-MiniLM-L6-v2, loaded once per test session."""
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def sample_entries() -> list[FaqEntry]:
    """The sample FAQ shipped in data/."""
    return load_faq(SAMPLE_FAQ)


@pytest.fixture(scope="session")
def sample_index(minilm: SentenceTransformerEmbedder, sample_entries: list[FaqEntry]) -> FaqIndex:
    """A FAISS index over the sample FAQ, built with the real embedder."""
    return FaqIndex.build(sample_entries, minilm)


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """The bundled SmolLM2-135M-Instruct as a transformers folder (converted once, cached)."""
    from bot.generation.bundled import resolve_model_path
    from bot.settings import BUNDLED_GENERATOR, Settings

    return Path(resolve_model_path(BUNDLED_GENERATOR, Settings().model.cache_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random chat model (real tokenizer, real Llama architecture) saved to a folder."""
    from tests.tiny_models import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(autouse=True)
def _no_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own SUPPORTBOT_* variables out of the tests."""
    for name in list(os.environ):
        if name.startswith("SUPPORTBOT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A supportbot.yaml using the sample FAQ, with index and database in a temp folder."""
    path = tmp_path / "supportbot.yaml"
    path.write_text(
        f"retrieval:\n  faq_path: {SAMPLE_FAQ}\n  index_dir: index\n"
        "storage:\n  database_url: sqlite+aiosqlite:///bot.db\n",
        encoding="utf-8",
    )
    return path
