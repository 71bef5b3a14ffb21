"""Opening a saved index: loaded when it still fits the FAQ file and embedder, else rebuilt."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.corpus import FaqEntry, corpus_hash, faq_file_hash, load_faq
from retrieval.embedder import Embedder, ProgressCallback
from retrieval.errors import CorpusError, IndexMissingError, IndexStaleError, IndexWriteError
from retrieval.head_cache import HEAD_FILE
from retrieval.index import store

if TYPE_CHECKING:
    from retrieval.index.faq_index import FaqIndex, Opened


def load(cls: type[FaqIndex], index_dir: Path, entries: Sequence[FaqEntry], embedder: Embedder,
         index_type: str = "flat") -> FaqIndex:
    """The saved index; IndexStaleError if corpus, embedder or index type no longer match."""
    meta = store.read_meta(index_dir)
    reasons = store.stale_reasons(meta, entries, embedder, index_type)
    if reasons:
        raise IndexStaleError(index_dir, reasons)
    return _from_saved(cls, index_dir, meta, entries, embedder)


def load_or_build(cls: type[FaqIndex], index_dir: Path, entries: Sequence[FaqEntry],
                  embedder: Embedder, rebuild: bool = True,
                  progress: ProgressCallback | None = None, faq_sha256: str | None = None,
                  index_type: str = "flat") -> Opened:
    """FaqIndex.load_or_build: the saved index, or one (re)built and saved, and why."""
    try:
        return load(cls, index_dir, entries, embedder, index_type), None
    except (IndexMissingError, IndexStaleError) as exc:
        if not rebuild:
            raise
        why = exc
    index = cls.build(entries, embedder, progress=progress, index_type=index_type)
    index.faq_sha256 = faq_sha256
    index.save(index_dir)
    return index, why


def file_digest(faq_path: Path, extra: Sequence[FaqEntry] = ()) -> str:
    """The FAQ file's bytes' hash, with the extra entries' when there are any: an index built
    from both is the same again only when both are."""
    digest = faq_file_hash(faq_path)
    if not extra:
        return digest
    return hashlib.sha256(f"{digest}+{corpus_hash(extra)}".encode()).hexdigest()


def with_extra(entries: Sequence[FaqEntry], extra: Sequence[FaqEntry], faq_path: Path
               ) -> list[FaqEntry]:
    """The file's entries and then the extra ones; CorpusError when an id is both."""
    taken = {entry.id for entry in entries}
    clash = [entry.id for entry in extra if entry.id in taken]
    if clash:
        raise CorpusError.single(faq_path, f"'{clash[0]}' is an FAQ entry's id and an "
                                 "action's: give the action another id")
    return [*entries, *extra]


def open_index(cls: type[FaqIndex], faq_path: Path, index_dir: Path, embedder: Embedder,
               rebuild: bool = True, progress: ProgressCallback | None = None,
               index_type: str = "flat", extra: Sequence[FaqEntry] = ()) -> Opened:
    """FaqIndex.open: the saved index of a FAQ file (and `extra` entries after the file's:
    the actions'), (re)built when missing or stale."""
    digest = file_digest(faq_path, extra)
    try:
        index = _load_unchanged(cls, index_dir, digest, embedder, index_type)
        index.head_file = index_dir / HEAD_FILE
        return index, None
    except (IndexMissingError, IndexStaleError):
        pass  # parse the file: load_or_build finds (and reports) why the index is stale
    entries = with_extra(load_faq(faq_path), extra, faq_path)
    index, why = load_or_build(cls, index_dir, entries, embedder, rebuild, progress, digest,
                               index_type)
    index.head_file = index_dir / HEAD_FILE
    if index.faq_sha256 != digest:
        # The same entries from other bytes (an edited comment, say): remember these bytes
        # so that the next start skips parsing. A read-only index only loses the shortcut.
        index.faq_sha256 = digest
        with contextlib.suppress(IndexWriteError):
            index.save_meta(index_dir)
    return index, why


def _load_unchanged(cls: type[FaqIndex], index_dir: Path, faq_sha256: str, embedder: Embedder,
                    index_type: str = "flat") -> FaqIndex:
    """The saved index with its saved entries, if built from a file with these bytes."""
    meta = store.read_meta(index_dir)
    if meta["faq_sha256"] != faq_sha256:
        raise IndexStaleError(index_dir, ["the FAQ file changed since it was built"])
    reasons = store.embedder_reasons(meta, embedder) + store.type_reasons(meta, index_type)
    if reasons:
        raise IndexStaleError(index_dir, reasons)
    entries = store.saved_entries(index_dir, meta)
    return _from_saved(cls, index_dir, meta, entries, embedder, known_hash=meta["corpus_hash"])


def _from_saved(cls: type[FaqIndex], index_dir: Path, meta: dict[str, Any],
                entries: Sequence[FaqEntry], embedder: Embedder,
                known_hash: str | None = None) -> FaqIndex:
    """The FaqIndex for checked metadata: reads the FAISS file and checks that they fit."""
    from retrieval.calibration import Calibration

    index = store.read_faiss(index_dir, meta, entries, embedder.dimension)
    opened = cls(entries, embedder, index, np.asarray(meta["phrasing_entry"], dtype=np.int64),
                 list(meta["phrasings"]), known_hash, meta["faq_sha256"],
                 index_type=str(meta.get("index_type", "flat")))
    # Kept until the index is configured: used when its key fits (retrieval.calibration).
    opened.saved_calibration = Calibration.from_dict(meta.get("calibration"))
    return opened
