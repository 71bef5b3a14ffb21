"""Training memory: the estimate printed before training, "auto" gradient checkpointing, the
CLI's refusal when the estimate does not fit, and old configs that still load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.cli import app
from tests.conftest import SAMPLE_FAQ, SAMPLE_TRANSCRIPTS
from training import memory
from training.config import TrainConfig
from training.errors import ConfigError
from training.loop import train
from training.types import IGNORE, Row

pytestmark = pytest.mark.timeout(300)
# SmolLM2-135M's shape (the bundled model), as its config.json gives it.
SMOL = {"num_hidden_layers": 30, "hidden_size": 576, "intermediate_size": 1536,
        "vocab_size": 49152, "num_attention_heads": 9, "num_key_value_heads": 3,
        "head_dim": 64, "tie_word_embeddings": True}
GB = 10**9


def test_the_estimate_grows_with_batch_and_length_and_drops_with_checkpointing() -> None:
    def size(**settings: Any) -> int:
        checkpointing = settings.pop("checkpointing", False)
        return memory.estimate(TrainConfig(**settings), SMOL, checkpointing=checkpointing).bytes

    assert size(batch_size=1) < size(batch_size=2) < size(batch_size=8)
    assert size(max_length=256) < size(max_length=512) < size(max_length=1024)
    assert size(batch_size=8, checkpointing=True) < size(batch_size=8) / 1.5
    assert size(rank=8) < size(rank=64)
    # The old CPU default (8 rows of 512, no checkpointing) measured a 17 GB peak.
    old = memory.estimate(TrainConfig(batch_size=8, gradient_checkpointing=False), SMOL)
    assert 12 * GB < old.bytes < 22 * GB
    assert set(old.parts) == {"runtime", "model", "LoRA + AdamW", "activations", "output head"}
    assert old.bytes == sum(old.parts.values())


def test_the_new_cpu_default_is_estimated_under_4_gb() -> None:
    found = memory.estimate(TrainConfig(), SMOL, device="cpu", label_share=0.25)
    assert found.bytes < 4 * GB and not found.checkpointing


def test_local_ranks_multiply_on_the_cpu_not_on_gpus() -> None:
    one = memory.estimate(TrainConfig(), SMOL).bytes
    assert memory.estimate(TrainConfig(), SMOL, ranks=2).bytes == 2 * one
    gpu = memory.estimate(TrainConfig(), SMOL, device="cuda")
    assert memory.estimate(TrainConfig(), SMOL, device="cuda", ranks=2).bytes == gpu.bytes


def test_the_line_names_parts_and_available_memory() -> None:
    line = memory.estimate(TrainConfig(), SMOL).line(int(21.3 * GB))
    assert line.startswith("memory: ~") and line.endswith(", 21.3 GB available")
    assert "model 0." in line and "activations" in line and "\n" not in line
    assert "unknown" in memory.estimate(TrainConfig(), SMOL).line(None)


def test_auto_checkpointing_is_on_exactly_when_the_estimate_without_it_does_not_fit() -> None:
    config = TrainConfig(batch_size=8)
    without = memory.estimate(config, SMOL, checkpointing=False).bytes
    fits = int(without / memory.AUTO_SHARE) + 1
    assert memory.resolve_checkpointing(config, SMOL, "cpu", fits) is False
    assert memory.resolve_checkpointing(config, SMOL, "cpu", fits - 2) is True
    assert memory.resolve_checkpointing(config, SMOL, "cpu", None) is False  # unknown: faster
    for forced in (True, False):
        forced_config = TrainConfig(gradient_checkpointing=forced)
        assert memory.resolve_checkpointing(forced_config, SMOL, "cpu", 1) is forced
        assert memory.resolve_checkpointing(forced_config, SMOL, "cpu", 10**15) is forced


def test_check_refuses_in_one_line_naming_the_settings() -> None:
    found = memory.estimate(TrainConfig(), SMOL)
    memory.check(found, None)  # unknown memory: no refusal
    memory.check(found, found.bytes)
    with pytest.raises(ConfigError) as refused:
        memory.check(found, found.bytes - 1)
    message = str(refused.value)
    for setting in ("--batch-size", "--max-length", "gradient_checkpointing=true",
                    "memory_check=false"):
        assert setting in message
    assert "\n" not in message
    on = memory.estimate(TrainConfig(), SMOL, checkpointing=True)
    with pytest.raises(ConfigError) as refused:
        memory.check(on, on.bytes - 1)
    assert "gradient_checkpointing" not in str(refused.value)  # already on: no use naming it


def test_available_memory_is_known_here() -> None:
    available = memory.available_bytes()
    assert available is not None and 0 < available < 2**50


def test_label_share() -> None:
    row = Row([1, 2, 3, 4], [IGNORE, IGNORE, 3, 4], [0, 1, 2, 3])
    assert memory.label_share([row]) == 0.5 and memory.label_share([]) == 1.0


def test_an_old_train_config_with_a_bool_still_loads(tmp_path: Path) -> None:
    """train_config.json written before "auto" (and before memory_check) loads as it was."""
    old = TrainConfig().to_dict()
    del old["memory_check"]
    old["gradient_checkpointing"] = False
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps(old))
    loaded = TrainConfig.from_dict(json.loads(path.read_text()))
    assert loaded.gradient_checkpointing is False and loaded.memory_check is True
    assert TrainConfig().gradient_checkpointing == "auto"
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        TrainConfig(gradient_checkpointing="sometimes")


def run_cli(tmp_path: Path, model: Path, *args: str) -> tuple[int, str]:
    config = tmp_path / "supportbot.yaml"
    config.write_text(f"retrieval:\n  faq_path: {SAMPLE_FAQ}\n  index_dir: index\n",
                      encoding="utf-8")
    result = CliRunner().invoke(app, [
        "--config", str(config), "train", str(SAMPLE_TRANSCRIPTS), "--out",
        str(tmp_path / "out"), "--base-model", str(model), "--max-steps", "1", "--samples", "0",
        "--max-length", "1024", *args])
    return result.exit_code, result.output


def test_the_cli_prints_the_estimate_and_refuses_what_does_not_fit(
        tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1000)
    code, output = run_cli(tmp_path, tiny_model_dir)
    assert code == 1 and "Traceback" not in output, output
    error = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "--batch-size" in error[0] and "memory_check=false" in error[0]
    assert "memory: ~" in output and "0.0 GB available" in output
    assert not (tmp_path / "out" / "adapter_config.json").exists()

    # Overridden: trains, and "auto" turned checkpointing on for the tiny memory.
    code, output = run_cli(tmp_path, tiny_model_dir, "--set", "memory_check=false")
    assert code == 0, output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["gradient_checkpointing"] is True


def test_auto_checkpointing_trains_the_same_steps(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"auto" resolved on (too little memory) gives the losses and gradients of off, in float64
    so that the tolerance holds on any CPU."""
    rows = [Row(list(range(3, 3 + n)), [IGNORE] * 4 + list(range(7, 3 + n)), list(range(n)))
            for n in (20, 24, 28, 32)]
    settings = {"learning_rate": 1e-2, "warmup_steps": 0, "threads": 1, "eval_every": 0,
                "save_every": 0, "dtype": "float64", "max_steps": 2, "batch_size": 2,
                "dropout": 0.0}
    plain = train(TrainConfig(**settings, gradient_checkpointing=False), tiny_model_dir, rows,
                  [], tmp_path / "off", progress=False)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1000)
    auto = train(TrainConfig(**settings), tiny_model_dir, rows, [], tmp_path / "auto",
                 progress=False)
    assert plain["gradient_checkpointing"] is False and auto["gradient_checkpointing"] is True
    for one, two in zip(plain["train"], auto["train"], strict=True):
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-9)
        assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-9)
