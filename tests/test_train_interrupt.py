"""Training stopped by a signal, or killed while it writes a checkpoint, then resumed: on the tiny
random Llama, in float64 so that "the same adapter" holds to 1e-10 on any CPU."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT
from tests.train_interrupt_support import EXACT, child_env, free_port, signal_after_step, tiny_rows
from training import checkpoint, interrupt
from training.config import TrainConfig
from training.errors import TrainingError, TrainingInterrupted
from training.loop import train
from training.types import Row

# Six rows in batches of 2: step 4 starts the second epoch; dropout stays on, so the data
# position and the RNG state both have to come back on resume.
RUN: dict[str, Any] = {**EXACT, "max_steps": 6, "batch_size": 2, "eval_every": 2, "save_every": 2}


@pytest.fixture(scope="module")
def rows(tiny_model_dir: Path) -> list[Row]:
    return tiny_rows(tiny_model_dir)


@pytest.fixture(scope="module")
def straight(tiny_model_dir: Path, rows: list[Row],
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The uninterrupted run every interrupted one must end as."""
    out = tmp_path_factory.mktemp("straight")
    return out, train(TrainConfig(**RUN), tiny_model_dir, rows[:6], rows[6:], out,
                      progress=False)


def same_adapter(a: Path, b: Path) -> None:
    first, second = (load_file(p / "adapter_model.safetensors") for p in (a, b))
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        torch.testing.assert_close(second[name], tensor, atol=1e-10, rtol=0)


def test_sigterm_mid_run_saves_a_partial_adapter_and_resume_ends_as_an_unbroken_run(
        tiny_model_dir: Path, rows: list[Row], straight: tuple[Path, dict[str, Any]],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = signal.getsignal(signal.SIGTERM)
    signal_after_step(monkeypatch, 3, signal.SIGTERM)  # between the step-2 and step-4 saves
    config = TrainConfig(**RUN)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(config, tiny_model_dir, rows[:6], rows[6:], tmp_path, progress=False)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) is before  # handlers only while training
    assert (stopped.value.step, stopped.value.total_steps) == (3, 6)
    assert stopped.value.exit_status == 143 and stopped.value.signal_name == "SIGTERM"
    assert str(stopped.value).startswith("stopped at step 3 of 6 (SIGTERM)")

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["partial"] is True and metrics["stopped_at_step"] == 3
    assert [e["step"] for e in metrics["train"]] == [1, 2, 3]
    assert [p.name for p in checkpoint.complete(tmp_path / "checkpoints")] == ["step-2",
                                                                                "step-3"]
    same_adapter(tmp_path, tmp_path / "checkpoints" / "step-3")  # the adapter so far
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path)

    resumed = train(config, tiny_model_dir, rows[:6], rows[6:], tmp_path, resume=True,
                    progress=False)
    out, done = straight
    assert resumed["partial"] is False and "stopped_at_step" not in resumed
    assert [e["step"] for e in resumed["train"]] == [1, 2, 3, 4, 5, 6]
    assert resumed["final_train_loss"] == pytest.approx(done["final_train_loss"], abs=1e-10)
    assert resumed["final_eval_loss"] == pytest.approx(done["final_eval_loss"], abs=1e-10)
    same_adapter(tmp_path, out)


ACCUMULATING: dict[str, Any] = {**EXACT, "max_steps": 4, "batch_size": 1, "grad_accum": 2}


def test_a_signal_between_micro_batches_abandons_the_step_and_resume_redoes_it(
        tiny_model_dir: Path, rows: list[Row], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With grad_accum 2, a SIGTERM during step 3's first micro-batch stops before its second
    (a stop waits for one micro-batch, not a whole step): step 2 is saved with the generators as
    they were before step 3 drew its dropout, and the resumed run ends as an unbroken one."""
    from training import loop

    config = TrainConfig(**ACCUMULATING)
    unbroken = train(config, tiny_model_dir, rows[:6], [], tmp_path / "unbroken",
                     progress=False)
    loss_sum, calls = loop._loss_sum, [0]

    def signalled_in_fifth(*args: Any) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 5:  # step 3's first micro-batch (no eval rows: no other calls)
            signal.raise_signal(signal.SIGTERM)
        return loss_sum(*args)

    monkeypatch.setattr(loop, "_loss_sum", signalled_in_fifth)
    out = tmp_path / "stopped"
    with pytest.raises(TrainingInterrupted) as stopped:
        train(config, tiny_model_dir, rows[:6], [], out, progress=False)
    monkeypatch.undo()
    assert calls[0] == 5 and stopped.value.step == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["partial"] is True and [e["step"] for e in metrics["train"]] == [1, 2]
    assert [p.name for p in checkpoint.complete(out / "checkpoints")] == ["step-2"]
    same_adapter(out, out / "checkpoints" / "step-2")

    resumed = train(config, tiny_model_dir, rows[:6], [], out, resume=True,
                    progress=False)
    assert [e["step"] for e in resumed["train"]] == [1, 2, 3, 4]
    assert resumed["final_train_loss"] == pytest.approx(unbroken["final_train_loss"], abs=1e-10)
    same_adapter(out, tmp_path / "unbroken")


def test_a_signal_during_the_base_evaluation_saves_step_0_and_resume_starts_from_it(
        tiny_model_dir: Path, rows: list[Row], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop while the base evaluation runs drops it after the batch in flight (an eval set can
    be large): nothing trained, but the printed `--resume` works, measures the base loss then
    and ends as an unbroken run."""
    from training import loop

    config = TrainConfig(**{**ACCUMULATING, "max_steps": 2})
    unbroken = train(config, tiny_model_dir, rows[:6], rows[6:], tmp_path / "unbroken",
                     progress=False)
    loss_sum, calls = loop._loss_sum, [0]

    def signalled_in_first(*args: Any) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 1:  # the first of the base evaluation's two batches
            signal.raise_signal(signal.SIGINT)
        return loss_sum(*args)

    monkeypatch.setattr(loop, "_loss_sum", signalled_in_first)
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as stopped:
        train(config, tiny_model_dir, rows[:6], rows[6:], out, progress=False)
    monkeypatch.undo()
    assert calls[0] == 1 and (stopped.value.step, stopped.value.exit_status) == (0, 130)
    assert [p.name for p in checkpoint.complete(out / "checkpoints")] == ["step-0"]
    assert json.loads((out / "metrics.json").read_text())["base_eval_loss"] is None

    resumed = train(config, tiny_model_dir, rows[:6], rows[6:], out, resume=True,
                    progress=False)
    assert [e["step"] for e in resumed["train"]] == [1, 2] and resumed["partial"] is False
    for key in ("base_eval_loss", "final_eval_loss", "final_train_loss"):
        assert resumed[key] == pytest.approx(unbroken[key], abs=1e-10), key
    same_adapter(out, tmp_path / "unbroken")


def test_resume_on_another_number_of_rows_is_refused_and_on_changed_rows_recorded(
        tiny_model_dir: Path, rows: list[Row], tmp_path: Path) -> None:
    """Transcripts that grew between the stop and the resume would change the data order
    silently: refused, the checkpoint left as it was. As many rows with other tokens keep the
    order (an edited transcript, a grounded prompt's retrieval on another CPU): continued, and
    metrics.json says so."""
    config = TrainConfig(**{**ACCUMULATING, "max_steps": 1})
    train(config, tiny_model_dir, rows[:6], rows[6:], tmp_path, progress=False)
    longer = TrainConfig(**{**ACCUMULATING, "max_steps": 2})  # max_steps may change on resume
    with pytest.raises(TrainingError, match=r"resume: 5 training rows now, 6 in step-1: "):
        train(longer, tiny_model_dir, rows[:5], rows[6:], tmp_path, resume=True, progress=False)
    assert [p.name for p in checkpoint.complete(tmp_path / "checkpoints")] == ["step-1"]
    edited = [rows[1], rows[0], *rows[2:6]]
    done = train(longer, tiny_model_dir, edited, rows[5:], tmp_path, resume=True,
                 progress=False)
    assert [e["step"] for e in done["train"]] == [1, 2]
    assert done["data_changed_on_resume"] == [{"step": 1, "rows": ["training", "eval"]}]


def test_a_signal_during_the_last_step_lets_the_run_finish(
        tiny_model_dir: Path, rows: list[Row], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    signal_after_step(monkeypatch, 2, signal.SIGINT)
    config = TrainConfig(**{**RUN, "max_steps": 2})
    metrics = train(config, tiny_model_dir, rows[:6], [], tmp_path, progress=False)
    assert metrics["partial"] is False and len(metrics["train"]) == 2


def test_checkpoints_by_time_are_saved_between_step_saves(
        tiny_model_dir: Path, rows: list[Row], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real clock with a period shorter than a step (6 ms) saves after every step though
    save_every is 0; one that is never due saves only at the end."""
    saved: list[int] = []
    save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save",
                        lambda *a, **k: (saved.append(a[4]), save(*a, **k))[1])
    config = TrainConfig(**{**RUN, "max_steps": 3, "save_every": 0, "save_every_minutes": 1e-4})
    train(config, tiny_model_dir, rows[:6], [], tmp_path / "timed", progress=False)
    assert saved == [1, 2, 3]
    assert [p.name for p in checkpoint.complete(tmp_path / "timed" / "checkpoints")] == [
        "step-2", "step-3"]  # the last two kept
    saved.clear()
    config = TrainConfig(**{**RUN, "max_steps": 3, "save_every": 0, "save_every_minutes": 60})
    train(config, tiny_model_dir, rows[:6], [], tmp_path / "hourly", progress=False)
    assert saved == [3]
    monkeypatch.undo()
    clock = interrupt.SaveClock(0.0)
    assert not clock.due()  # 0 = never by time
    clock = interrupt.SaveClock(1.0, last=time.monotonic() - 61)
    assert clock.due()
    clock.saved()
    assert not clock.due()


CHILD = """
import os, signal, sys, time
from training import interrupt
with interrupt.catching_stops() as flag:
    os.kill(os.getpid(), signal.SIG{first})
    print(flag.signal_name, flush=True)
    time.sleep({pause})
    os.kill(os.getpid(), signal.SIG{second})
    print("still running", flush=True)
sys.exit(0)
"""


@pytest.mark.parametrize(("first", "second", "pause", "status", "printed"), [
    ("INT", "INT", 1.1, 130, "SIGINT\n"),  # a second Ctrl+C exits at once
    # The terminal's SIGINT and torchrun's forwarded one are one press.
    ("INT", "INT", 0.0, 0, "SIGINT\nstill running\n"),
    ("TERM", "TERM", 0.0, 0, "SIGTERM\nstill running\n"),  # a repeated SIGTERM: save goes on
])
def test_a_second_ctrl_c_exits_at_once(first: str, second: str, pause: float, status: int,
                                       printed: str) -> None:
    code = CHILD.format(first=first, second=second, pause=pause)
    done = subprocess.run([sys.executable, "-c", code],
                          cwd=ROOT, env={**child_env(), "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (status, printed), done.stderr[-2000:]


# --- kill -9 while a checkpoint is being written ----

SLOW_SAVE = """
import json, sys, time
from pathlib import Path
import torch
from training import checkpoint
from training.config import TrainConfig
from training.loop import train
from training.types import Row

model, rows_file, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
rows = [Row(**r) for r in json.loads(rows_file.read_text())]
save = torch.save

def save_then_hang(state, path, *args, **kwargs):
    save(state, path, *args, **kwargs)
    if Path(path).parent.name == ".step-4.partial":  # written, not yet renamed
        (out / "hanging").touch()
        time.sleep(600)

checkpoint.torch.save = save_then_hang
train(TrainConfig(**json.loads(sys.argv[4])), model, rows[:6], rows[6:], out, progress=False)
"""


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_to_resume_from(
        tiny_model_dir: Path, rows: list[Row], straight: tuple[Path, dict[str, Any]],
        tmp_path: Path) -> None:
    script, rows_file, out = tmp_path / "slow.py", tmp_path / "rows.json", tmp_path / "run"
    script.write_text(SLOW_SAVE)
    rows_file.write_text(json.dumps([vars(r) for r in rows]))
    out.mkdir()
    child = subprocess.Popen(
        [sys.executable, str(script), str(tiny_model_dir), str(rows_file), str(out),
         json.dumps(RUN)], cwd=ROOT, env={**child_env(), "PYTHONPATH": str(ROOT),
                                          "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (out / "hanging").exists():
            assert child.poll() is None, child.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the checkpoint write never started"
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.communicate()
    checkpoints = out / "checkpoints"
    assert (checkpoints / ".step-4.partial" / "trainer_state.pt").is_file()
    assert [p.name for p in checkpoint.complete(checkpoints)] == ["step-2"]

    resumed = train(TrainConfig(**RUN), tiny_model_dir, rows[:6], rows[6:], out, resume=True,
                    progress=False)
    assert not list(checkpoints.glob(".step-*"))  # the killed write is gone
    assert [p.name for p in checkpoint.complete(checkpoints)] == ["step-4", "step-6"]
    assert resumed["final_train_loss"] == pytest.approx(straight[1]["final_train_loss"],
                                                        abs=1e-10)
    same_adapter(out, straight[0])


# --- two ranks on gloo ----

DDP_STOP = """
import json, os, signal, sys
from pathlib import Path
from training import interrupt
from training.config import TrainConfig
from training.errors import TrainingInterrupted
from training.loop import train
from training.types import Row

model, rows_file, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
rows = [Row(**r) for r in json.loads(rows_file.read_text())]
resume = sys.argv[5] == "resume"
agree, calls = interrupt.agree, [0]

def agree_after_signal(*args):
    calls[0] += 1
    if calls[0] == 2 and os.environ["RANK"] == "1" and not resume:
        os.kill(os.getpid(), signal.SIGTERM)  # only rank 1 is told; rank 0 must stop too
    return agree(*args)

interrupt.agree = agree_after_signal
if os.environ["RANK"] == "0" and not resume:  # rank 0's clock alone says a save is due
    interrupt.SaveClock.due = lambda self: calls[0] == 1
try:
    metrics = train(TrainConfig(**json.loads(sys.argv[4])), model, rows, rows[:3], out / "run",
                    resume=resume, progress=False)
    result = {"finished": metrics["train"][-1]["step"], "loss": metrics["final_train_loss"]}
except TrainingInterrupted as e:
    result = {"stopped": e.step, "by": e.signal_name, "status": e.exit_status}
(out / f"rank-{os.environ['RANK']}-{sys.argv[5]}.json").write_text(json.dumps(result))
"""


def test_two_ranks_on_gloo_save_and_stop_together_and_resume_to_the_same_adapter(
        tiny_model_dir: Path, rows: list[Row], tmp_path: Path) -> None:
    """2 ranks x 2 micro-batches of 1 without dropout = 1 process x batch 4 (test_training_loop):
    so the stopped-then-resumed two-rank run must end with the single process's adapter. The 3
    eval rows split 2 + 1: the ranks check for a stop before each eval batch of the longer
    shard, so a shorter shard must not leave one rank waiting in a collective."""
    settings = {**EXACT, "max_steps": 4, "batch_size": 1, "grad_accum": 2, "dropout": 0.0,
                "eval_every": 1}
    script, rows_file = tmp_path / "ddp_stop.py", tmp_path / "rows.json"
    script.write_text(DDP_STOP)
    rows_file.write_text(json.dumps([vars(r) for r in rows]))
    run = tmp_path / "run"
    for mode in ("fresh", "resume"):
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
             "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script),
             str(tiny_model_dir), str(rows_file), str(tmp_path), json.dumps(settings), mode],
            cwd=ROOT, env={**child_env(), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
            capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        if mode == "fresh":  # a save by rank 0's clock after step 1 and a stop after step 2
            ranks = [json.loads((tmp_path / f"rank-{r}-fresh.json").read_text())
                     for r in (0, 1)]
            assert ranks == [{"stopped": 2, "by": "SIGTERM", "status": 143}] * 2
            assert json.loads((run / "metrics.json").read_text())["partial"] is True
            assert [p.name for p in checkpoint.complete(run / "checkpoints")] == ["step-1",
                                                                                   "step-2"]
    ends = [json.loads((tmp_path / f"rank-{r}-resume.json").read_text()) for r in (0, 1)]
    assert ends[0]["finished"] == ends[1]["finished"] == 4

    single = train(TrainConfig(**{**settings, "batch_size": 4, "grad_accum": 1}),
                   tiny_model_dir, rows, rows[:3], tmp_path / "single", progress=False)
    assert ends[0]["loss"] == pytest.approx(single["final_train_loss"], abs=1e-10)
    same_adapter(run, tmp_path / "single")
