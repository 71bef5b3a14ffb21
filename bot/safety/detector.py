"""The learned detectors: logistic-regression heads over the bundled sentence embeddings.

`training/safety_detector.py` fits them on `data/safety/` and writes their weights as JSON
(`bot/safety/detector.json`); here they are a dot product, microseconds per message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.errors import SettingsError

DEFAULT_PATH = Path(__file__).with_name("detector.json")


@dataclass(frozen=True)
class Head:
    """One binary head: probability = sigmoid(w . embedding + b)."""

    weights: np.ndarray
    bias: float

    def probability(self, vector: np.ndarray) -> float:
        """The head's probability for one embedding."""
        logit = float(np.dot(self.weights, vector) + self.bias)
        return float(1.0 / (1.0 + np.exp(-logit)))


@dataclass(frozen=True)
class Detector:
    """The heads of one trained file, by name ("injection", "harmful"), and the embedder."""

    heads: dict[str, Head]
    embedder: str
    meta: dict[str, object]

    def head(self, name: str) -> Head | None:
        """A head by name, if the file has it."""
        return self.heads.get(name)


def load_detector(path: Path | None = None) -> Detector:
    """Read a detector file; SettingsError (naming the file) when it is missing or broken."""
    path = path or DEFAULT_PATH
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        heads = {name: Head(np.asarray(head["weights"], dtype=np.float32), float(head["bias"]))
                 for name, head in data["heads"].items()}
        return Detector(heads, str(data["embedder"]), dict(data.get("meta", {})))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SettingsError([f"safety.detector_path: cannot read the detector {path}: {exc} "
                             "(train one with `python -m training.safety_detector`)"]) from exc
