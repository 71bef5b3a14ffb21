"""`supportbot train` stopped by a signal as a user sees it: one line saying where it stopped and
how to continue, the signal's exit status, no traceback; then `--resume` finishes the run."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_TRANSCRIPTS
from tests.train_interrupt_support import run_train_cli, signal_after_step

pytestmark = pytest.mark.timeout(300)


def test_sigterm_prints_how_to_resume_and_exits_143(tmp_path: Path, tiny_model_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "adapter"
    args = [str(SAMPLE_TRANSCRIPTS), "--out", str(out), "--base-model", str(tiny_model_dir),
            "--max-steps", "3", "--batch-size", "2", "--max-length", "1024", "--samples", "0",
            "--set", "grad_accum=1"]
    signal_after_step(monkeypatch, 1, signal.SIGTERM)
    code, output = run_train_cli(tmp_path, *args)
    monkeypatch.undo()
    assert code == 143, output
    assert "stopped at step 1 of 3 (SIGTERM): checkpoint and partial adapter saved; " \
           "continue with: supportbot " in output and "--resume" in output
    assert "Traceback" not in output and "eval loss" not in output
    assert json.loads((out / "metrics.json").read_text())["partial"] is True
    assert (out / "adapter_model.safetensors").is_file()

    code, output = run_train_cli(tmp_path, *args, "--resume")
    assert code == 0, output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["partial"] is False and [e["step"] for e in metrics["train"]] == [1, 2, 3]
