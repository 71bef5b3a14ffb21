"""Helpers for the retrieval tests: an embedder with known cosines and a two-entry FAQ file."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# A two-entry FAQ file (index persistence and staleness, the head cache).
FAQ = """\
entries:
  - id: track
    questions: [How do I track my order?, where is my package]
    answer: Use the tracking link.
  - id: returns
    questions: [How do I return an item?]
    answer: Within 30 days.
"""


class TableEmbedder:
    """Fixed unit vectors per text: an Embedder whose cosines are known in advance."""

    name = "table"

    def __init__(self, table: dict[str, Sequence[float]]) -> None:
        self.dimension = len(next(iter(table.values())))
        self._table = {t: np.asarray(v, dtype=np.float32) / np.linalg.norm(v)
                       for t, v in table.items()}

    def embed(self, texts: Sequence[str], progress: object = None) -> np.ndarray:
        return np.stack([self._table[t] for t in texts]) if texts else \
            np.zeros((0, self.dimension), dtype=np.float32)
