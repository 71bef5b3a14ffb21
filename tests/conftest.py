"""Shared fixtures: the real bundled embedder, the sample FAQ, databases (SQLite, and PostgreSQL
in a schema of this run's own), web settings and clients, and config files.

A module whose tests should run on every database marks itself `pytest.mark.every_database`:
its tests that use `database_url` (or `store`) then run once on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from retrieval.corpus import FaqEntry, load_faq
from retrieval.embedder import SentenceTransformerEmbedder
from retrieval.index import FaqIndex
from tests.db_support import POSTGRES_URL, drop_schema, empty_schema, in_schema, new_schema_name

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from bot.settings import Settings
    from bot.storage import ConversationStore

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FAQ = ROOT / "data" / "faq.yaml"
SAMPLE_TRANSCRIPTS = ROOT / "data" / "transcripts" / "taskmaster4_sample.json"
DATABASES = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker that runs a module's database tests on every database."""
    config.addinivalue_line(
        "markers", "every_database: run the tests using `database_url` on SQLite and PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked every_database that use `database_url` run once per database."""
    if ("database_url" in metafunc.fixturenames
            and metafunc.definition.get_closest_marker("every_database")):
        metafunc.parametrize("database_url", DATABASES, indirect=True)


# --- retrieval ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    """The bundled all-MiniLM-L6-v2, loaded once per test session."""
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def sample_entries() -> list[FaqEntry]:
    """The sample FAQ shipped in data/."""
    return load_faq(SAMPLE_FAQ)


@pytest.fixture(scope="session")
def sample_index_shared(minilm: SentenceTransformerEmbedder,
                        sample_entries: list[FaqEntry]) -> FaqIndex:
    """A FAISS index over the sample FAQ, built once with the real embedder: only for fixtures
    that outlive a test and never change it (tests take `sample_index`)."""
    return FaqIndex.build(sample_entries, minilm)


@pytest.fixture
def sample_index(sample_index_shared: FaqIndex) -> FaqIndex:
    """The sample FAQ's index, a copy of its own for each test (an app that teaches it a
    phrasing or retires an entry changes no other test's index); copying skips the embedding."""
    return sample_index_shared.copy()


# --- models ------------------------------------------------------------------------------------

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


# --- databases ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[str]:
    """This run's own schema on the TEST_POSTGRES_URL server, dropped at the end of the run."""
    if not POSTGRES_URL:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail("REQUIRE_POSTGRES is set but TEST_POSTGRES_URL is not")
        pytest.skip("set TEST_POSTGRES_URL (bash .ci/postgres.sh prints one) to run this")
    schema = new_schema_name()
    yield schema
    drop_schema(POSTGRES_URL, schema)


@pytest.fixture
def postgres_url(postgres_schema: str) -> str:
    """The test PostgreSQL, in this run's schema, emptied for this test."""
    assert POSTGRES_URL is not None
    asyncio.run(empty_schema(POSTGRES_URL, postgres_schema))
    return in_schema(POSTGRES_URL, postgres_schema)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: the SQLite file tmp_path/bot.db; in modules marked every_database, a
    SQLite file in folders the store must create, then PostgreSQL."""
    kind = getattr(request, "param", None)
    if kind is None:
        return f"sqlite+aiosqlite:///{tmp_path}/bot.db"
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/sub/dir/bot.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[ConversationStore]:
    """An initialised conversation store on `database_url`, closed after the test."""
    from bot.storage import ConversationStore

    store = ConversationStore(database_url)
    await store.init()
    yield store
    await store.close()


# --- the web channel ---------------------------------------------------------------------------

@pytest.fixture
def operators() -> tuple[str, ...]:
    """Operator accounts made in `settings` (none; operator modules override this)."""
    return ()


@pytest.fixture
def settings(tmp_path: Path, operators: tuple[str, ...]) -> Settings:
    """Web-test settings (tests/web_support.py) with the `operators` accounts."""
    from tests.operator_support import add_operators
    from tests.web_support import web_settings

    settings = web_settings(tmp_path)
    if operators:
        add_operators(settings, *operators)
    return settings


@pytest.fixture
def client(settings: Settings, sample_index: FaqIndex,
           operators: tuple[str, ...]) -> Iterator[TestClient]:
    """A test client of the web app; over https when there are operators (their session
    cookie is Secure, so the client sends it over https only)."""
    from fastapi.testclient import TestClient

    from bot.channels.web import create_app

    base_url = "https://testserver" if operators else "http://testserver"
    with TestClient(create_app(settings, index=sample_index), base_url=base_url) as test_client:
        yield test_client


# --- settings from the environment and config files --------------------------------------------

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
