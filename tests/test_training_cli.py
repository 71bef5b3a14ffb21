"""`supportbot train` and `merge` as a user runs them: real transcripts, a real (tiny or bundled)
model, an adapter the bot then loads; bad input as one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bot.cli import app
from bot.generation.transformers_generator import TransformersGenerator
from bot.settings import GenerationSettings
from tests.conftest import ROOT, SAMPLE_FAQ, SAMPLE_TRANSCRIPTS

runner = CliRunner()
SAMPLE = SAMPLE_TRANSCRIPTS
pytestmark = pytest.mark.timeout(300)


def train(tmp_path: Path, *args: str) -> tuple[int, str]:
    config = tmp_path / "supportbot.yaml"
    config.write_text(f"retrieval:\n  faq_path: {SAMPLE_FAQ}\n  index_dir: index\n",
                      encoding="utf-8")
    result = runner.invoke(app, ["--config", str(config), "train", *args])
    return result.exit_code, result.output


def test_train_on_transcripts_writes_an_adapter_the_bot_loads(tmp_path: Path,
                                                               tiny_model_dir: Path) -> None:
    out = tmp_path / "adapter"
    code, output = train(tmp_path, str(SAMPLE), "--out", str(out), "--base-model",
                         str(tiny_model_dir), "--max-steps", "3", "--batch-size", "2",
                         "--max-length", "1024", "--samples", "1")
    assert code == 0, output
    assert "eval loss" in output and "serve it: model.adapter" in output
    for name in ("adapter_config.json", "adapter_model.safetensors", "train_config.json",
                 "metrics.json", "data_report.json", "loss.png", "samples.md",
                 "tokenizer_config.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "data_report.json").read_text())
    assert report["read_conversations"] == 40
    assert report["train_conversations"] + report["eval_conversations"] == 40
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["step"] for s in metrics["train"]] == [1, 2, 3]
    base = TransformersGenerator.load(str(tiny_model_dir), device="cpu")
    tuned = TransformersGenerator.load(str(tiny_model_dir), adapter=out, device="cpu")
    ids = base.tokenizer("one latte please", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(base.model(ids).logits, tuned.model(ids).logits), \
            "the adapter changes the model the bot serves"


def test_grounded_dry_run_reports_the_faq_examples(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "dry"
    code, output = train(tmp_path, "--grounded", "--out", str(out), "--base-model",
                         str(tiny_model_dir), "--dry-run", "--max-length", "1024")
    assert code == 0, output
    assert "grounded FAQ examples:" in output and "dry run: not trained" in output
    report = json.loads((out / "data_report.json").read_text())
    assert report["extra"]["grounded_conversations"] > 150
    assert not (out / "adapter_config.json").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "xml"], "--format: 'xml' is not one of auto, messages, csv, taskmaster"),
    (["--on-error", "ignore"], "--on-error: 'ignore' is not skip or fail"),
    (["--set", "rank=0"], "rank"),
    (["--set", "colour=blue"], "colour"),
    (["--set", "oops"], "--set oops: expected KEY=VALUE"),
])
def test_bad_options_are_one_clear_line(tmp_path: Path, tiny_model_dir: Path,
                                        args: list[str], message: str) -> None:
    code, output = train(tmp_path, str(SAMPLE), "--base-model", str(tiny_model_dir),
                         "--out", str(tmp_path / "o"), "--dry-run", *args)
    assert code == 1 and message in output and "Traceback" not in output, output


def test_a_bad_record_names_file_and_line_or_is_skipped(tmp_path: Path,
                                                        tiny_model_dir: Path) -> None:
    data = tmp_path / "logs.jsonl"
    good = {"messages": [{"role": "customer", "content": "hi"},
                         {"role": "agent", "content": "Hello! How can I help?"}]}
    data.write_text(json.dumps(good) + "\n{broken\n" + json.dumps(good | {"id": "b"}) + "\n",
                    encoding="utf-8")
    common = [str(data), "--base-model", str(tiny_model_dir), "--out", str(tmp_path / "o"),
              "--dry-run"]
    code, output = train(tmp_path, *common, "--on-error", "fail")
    assert code == 1 and f"{data}, line 2" in " ".join(output.split()), output
    code, output = train(tmp_path, *common)
    assert code == 0, output
    report = json.loads((tmp_path / "o" / "data_report.json").read_text())
    assert report["read_conversations"] == 2 and len(report["skipped"]) == 1
    assert f"{data}:2" in report["skipped"][0]


def test_nothing_to_train_on(tmp_path: Path) -> None:
    code, output = train(tmp_path, "--out", str(tmp_path / "o"))
    assert code == 1 and "nothing to train on" in output


@pytest.mark.slow
def test_short_real_run_on_the_bundled_model_then_merge(tmp_path: Path,
                                                        bundled_model_dir: Path) -> None:
    """SmolLM2-135M: two steps on real transcripts; the bot loads the adapter and generates;
    `merge` writes a full model that gives the same logits as base + adapter."""
    out = tmp_path / "smol"
    code, output = train(tmp_path, str(SAMPLE), "--out", str(out), "--max-steps", "2",
                         "--batch-size", "1", "--max-length", "256", "--samples", "0",
                         "--set", "eval_fraction=0.05")
    assert code == 0, output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final_eval_loss"] < metrics["base_eval_loss"] + 0.5
    tuned = TransformersGenerator.load("SmolLM2-135M-Instruct", adapter=out, device="cpu",
                                       cache_dir=bundled_model_dir.parent)
    params = GenerationSettings(temperature=0, max_new_tokens=8)
    [[reply]] = tuned.generate([[{"role": "user", "content": "one latte please"}]], params)
    assert reply.strip()
    merged = tmp_path / "merged"
    result = runner.invoke(app, ["merge", str(out), "--out", str(merged)])
    assert result.exit_code == 0, result.output
    full = TransformersGenerator.load(str(merged), device="cpu")
    ids = tuned.tokenizer("one latte please", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(full.model(ids).logits, tuned.model(ids).logits, atol=1e-3)


@pytest.mark.slow
def test_train_under_torchrun_with_two_cpu_processes(tmp_path: Path,
                                                     tiny_model_dir: Path) -> None:
    """The multi-GPU path, on 2 CPU processes (gloo): one adapter, one report, one printout."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "supportbot.yaml"
    config.write_text("persona:\n  company_name: Beans\n", encoding="utf-8")
    out = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "bot",
         "--config", str(config), "train", str(SAMPLE), "--base-model", str(tiny_model_dir),
         "--out", str(out), "--max-steps", "2", "--batch-size", "2", "--max-length", "1024",
         "--samples", "0"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                           "HF_HUB_OFFLINE": "1"},
        capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["rank_weight_max_diff"] == 0.0
    assert done.stdout.count("eval loss") == 1, "only the first process prints"
    assert (out / "adapter_model.safetensors").is_file()
