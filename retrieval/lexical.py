"""Word and character n-gram features of questions, for the classifier head (hybrid retrieval).

MiniLM embeddings blur words that decide between sibling entries ("top-up failed" and
"top-up reverted", product names, codes); TF-IDF over word 1-2-grams and character 2-5-grams
(scikit-learn) keeps them. The head learns weights for both, side by side with the embedding
(retrieval.classifier), and whether the words help at all is chosen on held-out phrasings of the
FAQ (`retrieval.lexical: auto`): on Banking77 with all its phrasings they raise top-1 by about
a point, on FAQs with a few phrasings per entry they do not, and fitting with them takes ~6x as
long (bench/README.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    from sklearn.feature_extraction.text import TfidfVectorizer

# The n-gram block's scale next to the unit-length embedding (each TF-IDF block has unit length
# too): measured on Banking77 (0.3, 0.5 and 1.0; 0.5 best), then fixed; the head's weight decay,
# chosen on held-out phrasings, does the rest.
WEIGHT = 0.5
# Caps on the vocabulary (most frequent n-grams first), which bound the head's size and the
# optimiser's memory on FAQs with tens of thousands of phrasings.
MAX_WORDS = 8_000
MAX_CHARS = 16_000


class Lexicon:
    """TF-IDF word 1-2-grams and character 2-5-grams, fitted on the texts given."""

    def __init__(self, texts: Sequence[str]) -> None:
        # Imported here: scikit-learn brings scipy.stats and pandas (~2 s, ~60 MB), which a
        # server whose head has no words (most FAQs: retrieval.lexical auto) never needs.
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = list(texts)
        self._word: TfidfVectorizer = TfidfVectorizer(
            ngram_range=(1, 2), sublinear_tf=True, max_features=MAX_WORDS, dtype=np.float32)
        self._char: TfidfVectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
            min_df=2 if len(texts) > 50 else 1, max_features=MAX_CHARS, dtype=np.float32)
        self._word.fit(texts)
        self._char.fit(texts)
        self.size = len(self._word.vocabulary_) + len(self._char.vocabulary_)

    def columns(self) -> dict[tuple[str, str], int]:
        """Each n-gram's column in features(), keyed by (block, n-gram): block "word" or
        "char"; for carrying a head's weights over to a lexicon fitted on other texts."""
        words = {("word", term): int(i) for term, i in self._word.vocabulary_.items()}
        offset = len(self._word.vocabulary_)
        return words | {("char", term): offset + int(i)
                        for term, i in self._char.vocabulary_.items()}

    def features(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """One row per text: both blocks side by side, each of unit length, times WEIGHT."""
        texts = list(texts)
        both = sparse.hstack([self._word.transform(texts), self._char.transform(texts)],
                             format="csr", dtype=np.float32)
        return both * np.float32(WEIGHT)


__all__ = ["WEIGHT", "Lexicon"]
