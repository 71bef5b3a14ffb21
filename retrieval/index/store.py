"""The saved index on disk: the FAISS file and its JSON metadata, written atomically, read with
checks that say why a saved index no longer fits (IndexStaleError) or is missing."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss

from retrieval.corpus import FaqEntry, corpus_hash
from retrieval.embedder import Embedder
from retrieval.errors import IndexMissingError, IndexStaleError, IndexWriteError

# 2: the metadata also holds the entries and the hash of the FAQ file's bytes.
FORMAT_VERSION = 2
INDEX_FILE = "index.faiss"
META_FILE = "meta.json"


def write_faiss(index_dir: Path, index: faiss.Index) -> None:
    """Write the FAISS file (atomically replaced), creating the folder owner-only."""
    tmp_index = index_dir / (INDEX_FILE + ".tmp")
    try:
        private_folders(index_dir)
        faiss.write_index(index, str(tmp_index))
        os.replace(tmp_index, index_dir / INDEX_FILE)
    except (OSError, RuntimeError) as exc:  # faiss raises RuntimeError when it cannot write
        with contextlib.suppress(OSError):
            tmp_index.unlink(missing_ok=True)
        raise IndexWriteError(index_dir, exc) from exc


def write_meta(index_dir: Path, *, corpus_hash: str, faq_sha256: str | None,
               embedder: Embedder, index_type: str, entries: Sequence[FaqEntry],
               phrasings: Sequence[str], phrasing_entry: Sequence[int],
               calibration: dict[str, Any] | None = None) -> None:
    """Write (atomically replace) the metadata of a saved index (with its calibrated answer
    threshold and margin when there is one: retrieval.calibration)."""
    meta = {
        "format_version": FORMAT_VERSION,
        "corpus_hash": corpus_hash,
        "faq_sha256": faq_sha256,
        "embedder": embedder.name,
        "dimension": embedder.dimension,
        "index_type": index_type,
        "entries": len(entries),
        "phrasings": list(phrasings),
        "phrasing_entry": list(phrasing_entry),
        "faq_entries": [asdict(entry) for entry in entries],
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if calibration is not None:
        meta["calibration"] = calibration
    tmp_meta = index_dir / (META_FILE + ".tmp")
    try:
        tmp_meta.write_text(json.dumps(meta, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp_meta, index_dir / META_FILE)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp_meta.unlink(missing_ok=True)
        raise IndexWriteError(index_dir, exc) from exc


def read_faiss(index_dir: Path, meta: dict[str, Any], entries: Sequence[FaqEntry],
               dimension: int) -> faiss.Index:
    """The saved FAISS index, checked against its metadata and the entries."""
    try:
        index = faiss.read_index(str(index_dir / INDEX_FILE))
    except RuntimeError as exc:
        raise IndexStaleError(index_dir, [f"unreadable FAISS file: {exc}"]) from exc
    if index.ntotal != len(meta["phrasings"]) or index.d != dimension:
        raise IndexStaleError(index_dir, ["FAISS file and metadata disagree"])
    if any(not 0 <= i < len(entries) for i in meta["phrasing_entry"]):
        raise IndexStaleError(index_dir, ["the phrasing table does not fit the entries"])
    return index


# The metadata's keys and the JSON types their values must have (None: null allowed).
_META_TYPES: dict[str, tuple[type, ...]] = {
    "format_version": (int,), "corpus_hash": (str,), "faq_sha256": (str, type(None)),
    "embedder": (str,), "dimension": (int,), "phrasings": (list,), "phrasing_entry": (list,),
    "faq_entries": (list,),
}


def read_meta(index_dir: Path) -> dict[str, Any]:
    """The saved metadata, checked for shape; IndexMissingError or IndexStaleError if unusable."""
    meta_path, index_path = index_dir / META_FILE, index_dir / INDEX_FILE
    if not meta_path.is_file() or not index_path.is_file():
        raise IndexMissingError(index_dir)
    try:
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise IndexStaleError(index_dir, [
            f"unreadable metadata {meta_path}: not UTF-8 ({exc.reason} at byte {exc.start})"
        ]) from exc
    except (OSError, ValueError) as exc:
        raise IndexStaleError(index_dir, [f"unreadable metadata {meta_path}: {exc}"]) from exc
    if not isinstance(meta, dict):
        raise IndexStaleError(index_dir, [
            f"malformed metadata {meta_path}: a JSON {type(meta).__name__}, not an object"])
    if meta.get("format_version") != FORMAT_VERSION:
        raise IndexStaleError(index_dir, [
            f"index format {meta.get('format_version')} != {FORMAT_VERSION}"])
    wrong = [key for key, types in _META_TYPES.items()
             if key not in meta or isinstance(meta[key], bool)
             or not isinstance(meta[key], types)]
    if not wrong and (len(meta["phrasing_entry"]) != len(meta["phrasings"])
                      or not all(isinstance(p, str) for p in meta["phrasings"])
                      or not all(type(i) is int for i in meta["phrasing_entry"])):
        wrong = ["phrasings", "phrasing_entry"]
    if wrong:
        raise IndexStaleError(index_dir, [
            f"malformed metadata {meta_path}: missing or wrong {', '.join(wrong)}"])
    return meta


def saved_entries(index_dir: Path, meta: dict[str, Any]) -> list[FaqEntry]:
    """The entries saved in the metadata; IndexStaleError if any is malformed."""
    entries = []
    for item in meta["faq_entries"]:
        try:
            entry = FaqEntry(item["id"], tuple(item["questions"]), item["answer"],
                             tuple(item["tags"]), item["link"])
        except (KeyError, TypeError) as exc:
            raise IndexStaleError(index_dir, [f"malformed saved entry: {exc!r}"]) from exc
        fields = (entry.id, entry.answer, *entry.questions, *entry.tags)
        if not all(isinstance(f, str) for f in fields) or not isinstance(entry.link, str | None):
            raise IndexStaleError(index_dir, [f"malformed saved entry {entry.id!r}"])
        entries.append(entry)
    return entries


def embedder_reasons(meta: dict[str, Any], embedder: Embedder) -> list[str]:
    """Why the saved index's embedder is not this one (empty when it is)."""
    if meta.get("embedder") != embedder.name:
        return [f"built with embedder '{meta.get('embedder')}', now '{embedder.name}'"]
    if meta.get("dimension") != embedder.dimension:
        return [f"dimension {meta.get('dimension')} != {embedder.dimension}"]
    return []


def type_reasons(meta: dict[str, Any], index_type: str) -> list[str]:
    """Why the saved index's FAISS type is not the one asked for (empty when it is)."""
    saved = meta.get("index_type", "flat")  # indexes saved before the setting were flat
    return [] if saved == index_type else [f"a {saved} index, now {index_type}"]


def stale_reasons(meta: dict[str, Any], entries: Sequence[FaqEntry],
                  embedder: Embedder, index_type: str = "flat") -> list[str]:
    """Why saved metadata no longer fits this corpus, embedder and index type (empty when it
    fits)."""
    reasons = []
    if meta.get("format_version") != FORMAT_VERSION:
        reasons.append(f"index format {meta.get('format_version')} != {FORMAT_VERSION}")
    if meta.get("corpus_hash") != corpus_hash(entries):
        reasons.append("the FAQ corpus changed since it was built")
    reasons += embedder_reasons(meta, embedder) + type_reasons(meta, index_type)
    if not isinstance(meta.get("phrasings"), list) or not isinstance(
            meta.get("phrasing_entry"), list):
        reasons.append("metadata lacks the phrasing table")
    return reasons


def private_folders(folder: Path) -> None:
    """Create `folder` and its missing parents readable by their owner only (0700): the
    index's folder usually sits in .supportbot/, beside the conversation database and the web
    secret, and whoever makes .supportbot/ first decides its mode. Existing folders are left
    as they are."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(mode=0o700, exist_ok=True)
