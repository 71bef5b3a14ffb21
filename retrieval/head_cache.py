"""The fitted classifier head, kept next to the saved index so that a restart skips the fit.

Fitting the head is the slow part of opening a large FAQ's index once its phrasings are
embedded and saved: ~8 s for Banking77's 8,000 phrasings, ~19 s with `retrieval.lexical: auto`
choosing the words, ~46 s for CLINC150's 15,000 (bench/README.md). The head depends only on
what the key covers (the embedder, the live phrasings and their entries, the out-of-scope
questions, the lexical mode and this file's format), so an index opened again on the same
inputs loads it instead. A file that does not match, cannot be read or cannot be written is
ignored: the head is fitted as if there were none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

from retrieval.classifier import SoftmaxHead

HEAD_FILE = "head.pkl"
# Bump when the head's fitting changes in a way that should not reuse older files.
CACHE_VERSION = 1

log = logging.getLogger(__name__)


def head_key(embedder: str, dimension: int, entry_ids: Sequence[str], phrasings: Sequence[str],
             owners: Sequence[int], outside: Sequence[str], lexical: str) -> str:
    """A digest of everything the fitted head depends on."""
    data = json.dumps([CACHE_VERSION, embedder, dimension, list(entry_ids), list(phrasings),
                       [int(o) for o in owners], list(outside), lexical],
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def load_head(path: Path, key: str) -> SoftmaxHead | None:
    """The head saved at `path` under `key`, or None (no file, another key, unreadable)."""
    try:
        with path.open("rb") as f:  # written by save_head, in the bot's own index folder
            saved = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception as exc:
        log.warning("ignoring the saved classifier head %s: %s", path, exc)
        return None
    if not isinstance(saved, dict) or saved.get("key") != key:
        return None
    head = saved.get("head")
    return head if isinstance(head, SoftmaxHead) else None


def save_head(path: Path, key: str, head: SoftmaxHead) -> None:
    """Write the head atomically; a folder that cannot be written only loses the shortcut."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            pickle.dump({"key": key, "head": head}, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError as exc:
        log.info("classifier head not saved to %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


__all__ = ["HEAD_FILE", "head_key", "load_head", "save_head"]
