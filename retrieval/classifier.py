"""A softmax (multinomial logistic-regression) head over phrasing embeddings, SetFit-style.

One class per FAQ entry, fitted on the normalised embeddings of the entries' phrasings by
full-batch L-BFGS in torch (seconds for 15,000 phrasings x 150 entries on one core, where
scikit-learn's LogisticRegression took more than 30 minutes). The L2 weight decay is chosen on
held-out phrasings of the FAQ itself (never on query files): a share of each entry's phrasings
is kept out, a head is fitted on the rest for each candidate decay, and the decay whose head
gives the held-out phrasings the lowest log loss wins; the final head is then fitted on every
phrasing with it.

Given questions the FAQ does not cover (`outside`: the bundled CLINC150 out-of-scope training
questions by default), the head learns one more class for them. An entry's probability is then
shared with "none of these": a question far from every entry's phrasings but nearer to the
unrelated ones gives its top entry less, and scores lower (bench/README.md).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Candidate L2 weight decays (on the mean cross-entropy), strongest first: each fit starts from
# the previous one's weights, so the path costs little more than one fit.
WEIGHT_DECAYS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
# Share of each entry's phrasings held out to choose the decay (entries with fewer than 2 keep
# all of theirs), and the seed of that split.
HOLDOUT = 0.2
SEED = 0
MAX_ITER = 200


@dataclass(frozen=True)
class SoftmaxHead:
    """Weights (dimension x columns) and biases of a fitted head, and the decay it used; with
    `outside`, the last column is the out-of-scope class."""

    weights: np.ndarray
    bias: np.ndarray
    weight_decay: float
    outside: bool = False

    @property
    def classes(self) -> int:
        """The number of entries (the out-of-scope column not counted)."""
        return int(self.weights.shape[1]) - int(self.outside)

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, dtype=np.float32) @ self.weights + self.bias

    def softmax(self, vectors: np.ndarray) -> np.ndarray:
        """Softmax over every column (the out-of-scope one included) for each row."""
        logits = self.logits(vectors)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """Each entry's probability for each row of `vectors` (queries x entries); with an
        out-of-scope class the rows sum to 1 minus its probability."""
        return self.softmax(vectors)[:, :self.classes]

    def outside_probability(self, vectors: np.ndarray) -> np.ndarray:
        """The out-of-scope class's probability for each row (zeros without that class)."""
        if not self.outside:
            return np.zeros(len(vectors), dtype=np.float32)
        return self.softmax(vectors)[:, -1]


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
                owner: np.ndarray, centroids: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Each query's score of every entry (queries x entries): the mean of the head's probability
    and the entry's blend cosine. The probability ranks (a softmax is sure of itself even for
    questions the FAQ does not cover); the cosine keeps such questions' scores low, so the
    answer and suggest thresholds still see out-of-scope questions (bench/README.md)."""
    parts = [(head.probabilities(vectors[i:i + chunk])
              + entry_cosines(vectors[i:i + chunk], phrasings, owner, centroids)) / 2
             for i in range(0, len(vectors), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, head.classes), dtype=np.float32)


def fit_head(vectors: np.ndarray, labels: np.ndarray, classes: int,
             weight_decay: float | None = None, max_iter: int = MAX_ITER,
             outside: np.ndarray | None = None) -> SoftmaxHead:
    """A head fitted on every row of `vectors` (label: its entry position), and on the rows of
    `outside` as one more class when given (unit vectors of out-of-scope questions); the weight
    decay is chosen on held-out rows first when not given (choose_weight_decay)."""
    with_outside = outside is not None and len(outside) > 0
    if outside is not None and with_outside:
        vectors = np.concatenate([np.asarray(vectors, dtype=np.float32),
                                  np.asarray(outside, dtype=np.float32)])
        labels = np.concatenate([np.asarray(labels, dtype=np.int64),
                                 np.full(len(outside), classes, dtype=np.int64)])
        classes += 1
    if weight_decay is None:
        weight_decay = choose_weight_decay(vectors, labels, classes, max_iter=max_iter)
    weights, bias = _fit(vectors, labels, classes, weight_decay, max_iter)
    return SoftmaxHead(weights, bias, weight_decay, with_outside)


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
                        seed: int = SEED, max_iter: int = MAX_ITER) -> float:
    """The decay whose head, fitted without the held-out rows, gives them the lowest log loss
    (the strongest decay when nothing can be held out)."""
    fit, held = held_out_split(labels, holdout, seed)
    if not len(held) or not len(fit):
        return float(decays[0])
    best, best_loss = float(decays[0]), float("inf")
    start: tuple[np.ndarray, np.ndarray] | None = None
    for decay in decays:
        start = _fit(vectors[fit], labels[fit], classes, decay, max_iter, start)
        head = SoftmaxHead(*start, decay)
        chance = head.probabilities(vectors[held])[np.arange(len(held)), labels[held]]
        loss = float(-np.log(np.maximum(chance, 1e-12)).mean())
        if loss < best_loss - 1e-9:
            best, best_loss = float(decay), loss
    return best


def _fit(vectors: np.ndarray, labels: np.ndarray, classes: int, weight_decay: float,
         max_iter: int, start: tuple[np.ndarray, np.ndarray] | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """Weights and biases minimising mean cross-entropy + weight_decay / 2 * |W|^2 (L-BFGS)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    if start is None:
        weights = torch.zeros(x.shape[1], classes, dtype=torch.float32)
        bias = torch.zeros(classes, dtype=torch.float32)
    else:
        weights, bias = torch.from_numpy(start[0].copy()), torch.from_numpy(start[1].copy())
    weights.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS([weights, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-10,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weights + bias, y) + weight_decay / 2 * (weights * weights).sum()
        loss.backward()
        return loss

    if len(x):
        optimizer.step(closure)
    return weights.detach().numpy().copy(), bias.detach().numpy().copy()


__all__ = ["SoftmaxHead", "choose_weight_decay", "entry_cosines", "fit_head", "head_scores",
           "held_out_split"]
