"""`supportbot serve`'s start path: what importing the server does not load, the embedder that
runs without sentence-transformers, and the warm-up that makes the first turn like later ones
(issue 35, bench/bench_start.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.runtime import RETRIEVAL_THREADS, open_runtime
from bot.settings import Settings
from retrieval.embedder import MeanPooled, SentenceTransformerEmbedder, resolve_embedder_path
from retrieval.index import FaqIndex
from tests.conftest import ROOT

# Loaded by neither the server's modules nor (but sklearn, for the toxicity guard) its start:
# each costs seconds and tens of MB in every worker.
HEAVY = ("matplotlib", "sklearn", "pandas", "sentence_transformers", "datasets", "peft", "trl",
         "training", "scipy.stats", "torch", "presidio_analyzer")


def test_importing_the_server_loads_no_heavy_module() -> None:
    code = ("import sys\n"
            "from bot.channels.workers import worker_app\n"
            "from bot.channels.serve import served_app, serve\n"
            "from bot.cli.serve import serve as command\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _folder(tmp_path: Path, modules: list[str], pooling: dict[str, bool],
            extras: dict[str, object] | None = None) -> Path:
    folder = tmp_path / "model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": "" if i == 0 else f"{i}_x", "type": t}
         for i, t in enumerate(modules)]).replace('"1_x"', '"1_Pooling"'))
    (folder / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": 128, "do_lower_case": False}))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 8, **pooling}))
    if extras is not None:
        (folder / "config_sentence_transformers.json").write_text(json.dumps(extras))
    return folder


MEAN = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}
THREE = ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
         "sentence_transformers.models.Normalize"]


def test_mean_pooled_takes_only_what_it_reproduces(tmp_path: Path) -> None:
    assert MeanPooled.fits(resolve_embedder_path("all-MiniLM-L6-v2")) is not None
    assert MeanPooled.fits(str(_folder(tmp_path, THREE, MEAN))) == {
        "max_seq_length": 128, "do_lower_case": False}


@pytest.mark.parametrize("modules, pooling, extras", [
    (THREE, {"pooling_mode_cls_token": True}, None),  # another pooling
    (THREE, {**MEAN, "pooling_mode_max_tokens": True}, None),  # two poolings
    (THREE[:2], MEAN, None),  # not normalised
    ([*THREE[:2], "sentence_transformers.models.Dense", THREE[2]], MEAN, None),  # a Dense layer
    (THREE, MEAN, {"prompts": {"query": "query: "}, "default_prompt_name": "query"}),
])
def test_mean_pooled_leaves_other_folders_to_sentence_transformers(
        tmp_path: Path, modules: list[str], pooling: dict[str, bool],
        extras: dict[str, object] | None) -> None:
    assert MeanPooled.fits(str(_folder(tmp_path, modules, pooling, extras))) is None
    assert MeanPooled.fits(str(tmp_path / "missing")) is None
    assert MeanPooled.fits("sentence-transformers/some-hub-id") is None


@pytest.mark.slow
def test_mean_pooled_vectors_are_sentence_transformers(minilm: SentenceTransformerEmbedder
                                                       ) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["Where is my order?", "  spaces around  ", "x", "word " * 400, "café ☕ 日本語"]
    reference = SentenceTransformer(resolve_embedder_path("all-MiniLM-L6-v2"), device="cpu")
    expected = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert isinstance(minilm._model, MeanPooled)
    assert np.abs(minilm.embed(texts) - expected).max() < 1e-5


async def test_open_runtime_warms_up_without_storing(settings: Settings,
                                                     sample_index: FaqIndex) -> None:
    runtime = await open_runtime(settings, sample_index)
    try:
        threads = runtime.manager.executor._threads  # started by the warm-up, not a customer
        assert len(threads) == RETRIEVAL_THREADS
        assert await runtime.store.history("warm-up") == []
        assert (await runtime.store.counts())["messages"] == 0
    finally:
        await runtime.close()
