"""A softmax (multinomial logistic-regression) head over phrasing embeddings, SetFit-style.

One class per FAQ entry, fitted on the normalised embeddings of the entries' phrasings by
full-batch L-BFGS in torch (seconds for 15,000 phrasings x 150 entries on one core, where
scikit-learn's LogisticRegression took more than 30 minutes). The L2 weight decay is chosen on
held-out phrasings of the FAQ itself (never on query files): a share of each entry's phrasings
is kept out, a head is fitted on the rest for each candidate decay, and the decay whose head
gives the held-out phrasings the lowest log loss wins; the final head is then fitted on every
phrasing with it.

With `texts` (the phrasings' own words), the head may also weigh word and character n-grams
(retrieval.lexical) next to the embedding: fitted with and without them, the held-out log loss
decides, together with the decay.

Given questions the FAQ does not cover (`outside`: the bundled CLINC150 out-of-scope training
questions by default), the head learns one more class for them. An entry's probability is then
shared with "none of these": a question far from every entry's phrasings but nearer to the
unrelated ones gives its top entry less, and scores lower (bench/README.md).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from retrieval.lexical import Lexicon

# Candidate L2 weight decays (on the mean cross-entropy), strongest first: each fit starts from
# the previous one's weights, so the path costs little more than one fit.
WEIGHT_DECAYS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
# Share of each entry's phrasings held out to choose the decay (entries with fewer than 2 keep
# all of theirs), and the seed of that split.
HOLDOUT = 0.2
SEED = 0
MAX_ITER = 200
# L-BFGS iterations of a fit that weighs words too (each ~10x the cost of one without): on
# Banking77, 50 gave the same held-out top-1 as 200 (93.4% and 93.3%) in 58% of the time; 20
# stopped short enough that the held-out phrasings no longer chose the words.
WORDS_MAX_ITER = 50
# L-BFGS iterations of a refit that starts from the last head (fit_head's `start`), which is
# already near the new optimum when a few phrasings changed.
REFIT_MAX_ITER = 20


@dataclass(frozen=True)
class SoftmaxHead:
    """Weights (dimension x columns) and biases of a fitted head, and the decay it used; with
    `outside`, the last column is the out-of-scope class; with `lexicon`, `lexical_weights`
    (n-grams x columns) weigh the questions' n-grams too, and every call needs the texts."""

    weights: np.ndarray
    bias: np.ndarray
    weight_decay: float
    outside: bool = False
    lexicon: Lexicon | None = None
    lexical_weights: np.ndarray | None = None

    @property
    def classes(self) -> int:
        """The number of entries (the out-of-scope column not counted)."""
        return int(self.weights.shape[1]) - int(self.outside)

    def logits(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        logits = np.asarray(vectors, dtype=np.float32) @ self.weights + self.bias
        if self.lexicon is not None and self.lexical_weights is not None:
            if texts is None or len(texts) != len(logits):
                raise ValueError("this head weighs the questions' words too: pass their texts, "
                                 "one per vector")
            logits += np.asarray(self.lexicon.features(texts) @ self.lexical_weights)
        return logits

    def softmax(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        """Softmax over every column (the out-of-scope one included) for each row."""
        logits = self.logits(vectors, texts)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def probabilities(self, vectors: np.ndarray, texts: Sequence[str] | None = None
                      ) -> np.ndarray:
        """Each entry's probability for each row of `vectors` (queries x entries); with an
        out-of-scope class the rows sum to 1 minus its probability."""
        return self.softmax(vectors, texts)[:, :self.classes]

    def outside_probability(self, vectors: np.ndarray, texts: Sequence[str] | None = None
                            ) -> np.ndarray:
        """The out-of-scope class's probability for each row (zeros without that class)."""
        if not self.outside:
            return np.zeros(len(vectors), dtype=np.float32)
        return self.softmax(vectors, texts)[:, -1]


def entry_cosines(vectors: np.ndarray, phrasings: np.ndarray, owner: np.ndarray,
                  centroids: np.ndarray) -> np.ndarray:
    """The blend cosine of every entry for each query (queries x entries): the mean of its
    nearest phrasing's cosine and its centroid's (-inf for an entry without phrasings)."""
    if len(owner) and not (owner[:-1] <= owner[1:]).all():  # built indexes are sorted already
        order = np.argsort(owner, kind="stable")
        phrasings, owner = phrasings[order], owner[order]
    present, starts = np.unique(owner, return_index=True)
    nearest = np.full((len(vectors), len(centroids)), -np.inf, dtype=np.float32)
    if len(owner):
        nearest[:, present] = np.maximum.reduceat(vectors @ phrasings.T, starts, axis=1)
    return (nearest + vectors @ centroids.T) / 2


def head_scores(head: SoftmaxHead, vectors: np.ndarray, phrasings: np.ndarray,
                owner: np.ndarray, centroids: np.ndarray, chunk: int = 256,
                texts: Sequence[str] | None = None) -> np.ndarray:
    """Each query's score of every entry (queries x entries): the mean of the head's probability
    and the entry's blend cosine. The probability ranks (a softmax is sure of itself even for
    questions the FAQ does not cover); the cosine keeps such questions' scores low, so the
    answer and suggest thresholds still see out-of-scope questions (bench/README.md)."""
    parts = [(head.probabilities(vectors[i:i + chunk],
                                 None if texts is None else texts[i:i + chunk])
              + entry_cosines(vectors[i:i + chunk], phrasings, owner, centroids)) / 2
             for i in range(0, len(vectors), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, head.classes), dtype=np.float32)


def fit_head(vectors: np.ndarray, labels: np.ndarray, classes: int,
             weight_decay: float | None = None, max_iter: int = MAX_ITER,
             outside: np.ndarray | None = None, texts: Sequence[str] | None = None,
             outside_texts: Sequence[str] = (), lexical: bool | None = None,
             start: SoftmaxHead | None = None) -> SoftmaxHead:
    """A head fitted on every row of `vectors` (label: its entry position), and on the rows of
    `outside` as one more class when given (unit vectors of out-of-scope questions). With
    `texts` (and `outside_texts`), the rows' words may be weighed too (`lexical`: True, False,
    or None to choose). The decay (and, when not given, the use of words) is chosen on
    held-out rows first (choose_weight_decay).

    `start`: a head fitted on an earlier state of the same FAQ, whose entries kept their
    positions (entries are only appended): the refit keeps its decay and its choice of words,
    and starts from its weights (new entries' and new n-grams' at zero; the vocabulary is
    fitted again on the texts), so a refit after a few changed phrasings costs a fraction of a
    first fit (bench/README.md)."""
    with_outside = outside is not None and len(outside) > 0
    texts = list(texts) if texts is not None else None
    if outside is not None and with_outside:
        vectors = np.concatenate([np.asarray(vectors, dtype=np.float32),
                                  np.asarray(outside, dtype=np.float32)])
        labels = np.concatenate([np.asarray(labels, dtype=np.int64),
                                 np.full(len(outside), classes, dtype=np.int64)])
        classes += 1
        if texts is not None:
            texts += list(outside_texts)
            if len(texts) != len(vectors):
                raise ValueError("outside_texts: one text per out-of-scope vector")
    if start is not None and _continues(start, classes, with_outside, texts is not None):
        lexicon, words = _words(texts) if start.lexicon is not None else (None, None)
        weights, bias, lexical_weights = _fit(
            vectors, labels, classes, start.weight_decay, min(max_iter, REFIT_MAX_ITER),
            _widened(start, classes, lexicon), words)
        return SoftmaxHead(weights, bias, start.weight_decay, with_outside, lexicon,
                           lexical_weights)
    if texts is None or lexical is False:
        choices: tuple[bool, ...] = (False,)
    else:
        choices = (False, True) if lexical is None else (True,)
    lexicon, words = _words(texts) if True in choices else (None, None)
    begin = None  # the chosen fit on the rows not held out: the final fit starts from it
    if words is None:
        choices = (False,)
    if weight_decay is None or len(choices) > 1:
        weight_decay, use, begin = _choose(vectors, labels, classes, WEIGHT_DECAYS if
                                           weight_decay is None else (weight_decay,),
                                           HOLDOUT, SEED, max_iter, words, choices)
    else:
        use = choices[0]
    if not use:
        lexicon = words = None
    weights, bias, lexical_weights = _fit(vectors, labels, classes, weight_decay, max_iter,
                                          begin, words)
    return SoftmaxHead(weights, bias, weight_decay, with_outside, lexicon, lexical_weights)


def _continues(start: SoftmaxHead, columns: int, outside: bool, texts: bool) -> bool:
    """Whether a fit with `columns` columns (entries, then the out-of-scope one if `outside`)
    can start from `start`: the same out-of-scope class, no fewer entries, and the texts if it
    weighs words."""
    return (start.outside == outside and columns - int(outside) >= start.classes
            and (start.lexicon is None or texts))


def _widened(start: SoftmaxHead, columns: int, lexicon: Lexicon | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`start`'s weights with zero columns for the entries added since (their bias: the mean
    of the old entries'), the out-of-scope column kept last; its n-gram weights moved to their
    n-grams' rows in `lexicon` (zero rows for n-grams new to it)."""
    old = start.classes

    def widen(matrix: np.ndarray, fill: float = 0.0) -> np.ndarray:
        out = np.full((*matrix.shape[:-1], columns), fill, dtype=np.float32)
        out[..., :old] = matrix[..., :old]
        if start.outside:
            out[..., -1] = matrix[..., -1]
        return out

    fill = float(start.bias[:old].mean()) if old else 0.0
    lexical = None
    if lexicon is not None and start.lexicon is not None and start.lexical_weights is not None:
        lexical = np.zeros((lexicon.size, start.lexical_weights.shape[1]), dtype=np.float32)
        before = start.lexicon.columns()
        moved = [(row, before[key]) for key, row in lexicon.columns().items() if key in before]
        if moved:
            rows, sources = (np.array(side, dtype=np.int64) for side in zip(*moved, strict=True))
            lexical[rows] = start.lexical_weights[sources]
        lexical = widen(lexical)
    return widen(start.weights), widen(start.bias, fill), lexical


def _words(texts: Sequence[str] | None) -> tuple[Lexicon | None, sparse.csr_matrix | None]:
    """The n-gram vocabulary fitted on `texts` and their features; (None, None) without texts
    or when they hold no n-gram at all."""
    if texts is None:
        return None, None
    try:
        lexicon = Lexicon(texts)
    except ValueError:  # scikit-learn: "empty vocabulary"
        return None, None
    return lexicon, lexicon.features(texts)


def held_out_split(labels: np.ndarray, holdout: float = HOLDOUT, seed: int = SEED
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Row positions to fit on and to hold out: round(holdout * n) (at least 1) of every label
    with 2 or more rows are held out."""
    rng = random.Random(seed)
    fit: list[int] = []
    held: list[int] = []
    by_label: dict[int, list[int]] = {}
    for row, label in enumerate(labels.tolist()):
        by_label.setdefault(int(label), []).append(row)
    for label in sorted(by_label):
        rows = by_label[label]
        rng.shuffle(rows)
        keep = len(rows)
        if len(rows) >= 2:
            keep -= max(1, round(holdout * len(rows)))
        fit += rows[:keep]
        held += rows[keep:]
    return np.array(sorted(fit), dtype=np.int64), np.array(sorted(held), dtype=np.int64)


def choose_weight_decay(vectors: np.ndarray, labels: np.ndarray, classes: int,
                        decays: Sequence[float] = WEIGHT_DECAYS, holdout: float = HOLDOUT,
                        seed: int = SEED, max_iter: int = MAX_ITER,
                        texts: Sequence[str] | None = None,
                        lexical: Sequence[bool] = (False,)) -> tuple[float, bool]:
    """The decay whose head, fitted on embeddings without the held-out rows, gives them the
    lowest log loss (the strongest decay when nothing can be held out); and whether to weigh
    the rows' words (each of `lexical` is tried; words need `texts`): with that decay, a head
    that also weighs them must give the held-out rows a lower log loss. (The words' fit is
    ~10x the cost of the embeddings', so their decay is not searched: one fit, warm-started.)"""
    _, words = _words(texts) if True in lexical else (None, None)
    decay, use, _ = _choose(vectors, labels, classes, decays, holdout, seed, max_iter, words,
                            lexical if words is not None else (False,))
    return decay, use


def _choose(vectors: np.ndarray, labels: np.ndarray, classes: int, decays: Sequence[float],
            holdout: float, seed: int, max_iter: int, words: sparse.csr_matrix | None,
            lexical: Sequence[bool]
            ) -> tuple[float, bool, tuple[np.ndarray, np.ndarray, np.ndarray | None] | None]:
    """choose_weight_decay on the n-gram features of every row (`words`: their vocabulary is
    fitted on all rows, their weights only on the rows not held out), also returning the chosen
    fit on those rows (None when nothing was held out), for the final fit to start from."""
    fit, held = held_out_split(labels, holdout, seed)
    if not len(held) or not len(fit):
        return float(decays[0]), words is not None and False not in lexical, None
    best, best_loss = float(decays[0]), float("inf")
    start: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None
    chosen = None
    for decay in decays:
        start = _fit(vectors[fit], labels[fit], classes, decay, max_iter, start)
        loss = _held_out_loss(start, vectors[held], labels[held])
        if loss < best_loss - 1e-9:
            best, best_loss, chosen = float(decay), loss, start
    if True not in lexical or words is None or chosen is None:
        return best, False, chosen
    if False not in lexical:
        return best, True, chosen
    with_words = _fit(vectors[fit], labels[fit], classes, best, max_iter, chosen, words[fit])
    if _held_out_loss(with_words, vectors[held], labels[held], words[held]) < best_loss - 1e-9:
        return best, True, with_words
    return best, False, chosen


def _held_out_loss(head: tuple[np.ndarray, np.ndarray, np.ndarray | None], vectors: np.ndarray,
                   labels: np.ndarray, words: sparse.csr_matrix | None = None) -> float:
    """Mean log loss of a fitted (weights, bias, n-gram weights) on held-out rows."""
    logits = vectors @ head[0] + head[1]
    if words is not None and head[2] is not None:
        logits = logits + np.asarray(words @ head[2])
    logits -= logits.max(axis=1, keepdims=True)
    log_chance = logits[np.arange(len(labels)), labels] - np.log(np.exp(logits).sum(axis=1))
    return float(-np.maximum(log_chance, np.log(1e-12)).mean())


def _fit(vectors: np.ndarray, labels: np.ndarray, classes: int, weight_decay: float,
         max_iter: int, start: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
         words: sparse.csr_matrix | None = None
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Weights, biases and n-gram weights (None without `words`) minimising mean cross-entropy
    + weight_decay / 2 * |all weights|^2 (L-BFGS)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    if start is None:
        weights = torch.zeros(x.shape[1], classes, dtype=torch.float32)
        bias = torch.zeros(classes, dtype=torch.float32)
        lexical = None if words is None else torch.zeros(words.shape[1], classes)
    else:
        weights, bias = torch.from_numpy(start[0].copy()), torch.from_numpy(start[1].copy())
        lexical = None if words is None else (
            torch.zeros(words.shape[1], classes) if start[2] is None
            else torch.from_numpy(start[2].copy()))
    params = [weights, bias] if lexical is None else [weights, bias, lexical]
    for p in params:
        p.requires_grad_(True)
    product = None if words is None else _sparse_product(words)
    if words is not None:
        max_iter = min(max_iter, WORDS_MAX_ITER)
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-10,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = x @ weights + bias
        penalty = (weights * weights).sum()
        if product is not None and lexical is not None:
            logits = logits + product(lexical)
            penalty = penalty + (lexical * lexical).sum()
        loss = F.cross_entropy(logits, y) + weight_decay / 2 * penalty
        loss.backward()
        return loss

    if len(x):
        optimizer.step(closure)
    return (weights.detach().numpy().copy(), bias.detach().numpy().copy(),
            None if lexical is None else lexical.detach().numpy().copy())


def _sparse_product(matrix: sparse.spmatrix) -> Callable[[Any], Any]:
    """`weights -> matrix @ weights` for torch autograd, with the matrix and its transpose held
    as CSR tensors: about 6x faster per L-BFGS step than torch.sparse.mm on a COO tensor (whose
    backward transposes and sorts the matrix every step), measured on Banking77's n-grams."""
    import torch

    def csr(m: sparse.spmatrix) -> Any:
        m = sparse.csr_matrix(m, dtype=np.float32)
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                           torch.from_numpy(m.indices.astype(np.int64)),
                                           torch.from_numpy(m.data), m.shape)

    forward, backward = csr(matrix), csr(matrix.T)

    class Product(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, weights: Any) -> Any:
            return forward @ weights

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            return backward @ grad

    return Product.apply


__all__ = ["SoftmaxHead", "choose_weight_decay", "entry_cosines", "fit_head", "head_scores",
           "held_out_split"]
