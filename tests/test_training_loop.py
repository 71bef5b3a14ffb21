"""The LoRA training loop, its config and merge, on the tiny random Llama (real BPE + ChatML)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from training import checkpoint
from training.config import TrainConfig
from training.errors import ConfigError, TrainingError
from training.loop import train
from training.merge import merge
from training.types import IGNORE, Row

ROOT = Path(__file__).resolve().parent.parent
PAIRS = [
    ("How do I return an item?", "You can return most items within 30 days of delivery."),
    ("How long is delivery?", "Standard delivery takes 3-5 working days."),
    ("Where is my parcel?", "Open My orders in your account to see the tracking status."),
    ("I forgot my password", "Click Forgot password on the sign-in page."),
    ("Is express delivery faster?", "Yes: express delivery takes 1-2 days."),
    ("Can I get a refund?", "Yes, a full refund within 30 days."),
    ("Hi", "Hello! How can I help?"),
    ("Where do I sign in?", "Use the sign-in page and follow the link we email you."),
]
# Fast, deterministic settings for the tiny model; each test changes what it is about.
QUICK = {"learning_rate": 1e-2, "warmup_steps": 0, "threads": 1, "eval_every": 0,
         "save_every": 0, "grad_accum": 1}
# Equivalence checks (two ways of computing the same step) run in float64: float32 sums taken
# in another order, as other CPUs' kernels (AVX-512, AMX) take them, differ by ~1e-7 relative,
# and Adam turns that into ~1e-5 moves of weights whose gradients are near zero.
EXACT = {**QUICK, "dtype": "float64"}


def encode(tokenizer: Any, question: str, answer: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def make_row(*examples: list[int], prompt: int = 8) -> Row:
    """One row of one or more packed examples; the first `prompt` tokens of each carry no loss."""
    row = Row()
    for ids in examples:
        row.input_ids += ids
        row.labels += [IGNORE] * prompt + ids[prompt:]
        row.position_ids += list(range(len(ids)))
    return row


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def rows(tokenizer: Any) -> list[Row]:
    """Eight rows of different lengths (so a wrong loss normalisation shows); the last is two
    examples packed into one row."""
    encoded = [encode(tokenizer, q, a) for q, a in PAIRS]
    return [make_row(ids) for ids in encoded[:7]] + [make_row(encoded[7], encoded[6])]


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, rows: list[Row],
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """30 steps memorising four conversations, with evals and checkpoints along the way."""
    out = tmp_path_factory.mktemp("trained")
    config = TrainConfig(**{**QUICK, "max_steps": 30, "batch_size": 4, "eval_every": 10,
                            "save_every": 10})
    return out, train(config, tiny_model_dir, rows[:4], rows[:4], out, progress=True)


def logits(model: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]


# --- TrainConfig ----

@pytest.mark.parametrize(("field", "value"), [
    ("rank", 0), ("rank", 2.5), ("rank", True), ("alpha", 0), ("dropout", 1.0),
    ("dropout", -0.1), ("target_modules", ""), ("target_modules", []),
    ("target_modules", ["q_proj", 3]), ("learning_rate", 0), ("learning_rate", "fast"),
    ("warmup_ratio", 1.5), ("warmup_steps", -1), ("schedule", "step"), ("epochs", 0),
    ("max_steps", 0), ("batch_size", 0), ("grad_accum", 0), ("max_length", 1),
    ("max_grad_norm", 0), ("weight_decay", -1), ("seed", -1), ("eval_every", -5),
    ("save_every", -1), ("save_every_minutes", -0.5),
    ("pack", "yes"), ("gradient_checkpointing", 1), ("eval_fraction", 1),
    ("device", "gpu"),
    ("threads", -1), ("log_every", 0),
])
def test_config_rejects_bad_values_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_config_round_trips_through_json_and_refuses_unknown_keys() -> None:
    config = TrainConfig(target_modules=("q_proj", "v_proj"), max_steps=7, device="cuda:1")
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="lerning_rate"):
        TrainConfig.from_dict({**config.to_dict(), "lerning_rate": 1e-3})


def test_every_config_field_has_help() -> None:
    assert TrainConfig.model_fields
    assert all(f.description for f in TrainConfig.model_fields.values())


# --- training ----

def test_training_lowers_the_loss_and_writes_every_output(
        trained: tuple[Path, dict[str, Any]]) -> None:
    out, metrics = trained
    losses = [e["loss"] for e in metrics["train"]]
    assert len(losses) == 30 and losses[-1] < 0.4 * losses[0]
    assert [e["step"] for e in metrics["eval"]] == [0, 10, 20, 30]
    assert metrics["final_eval_loss"] < 0.5 * metrics["base_eval_loss"]
    assert metrics["final_eval_perplexity"] == pytest.approx(
        torch.exp(torch.tensor(metrics["final_eval_loss"])).item(), rel=1e-5)
    assert metrics["device"] == "cpu" and metrics["world_size"] == 1
    assert metrics["peak_memory_mb"] > 0 and metrics["wall_time_s"] > 0
    assert all(e["tokens_per_s"] > 0 and e["lr"] > 0 for e in metrics["train"])
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json",
                 "train_config.json", "metrics.json", "loss.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text())["train"] == metrics["train"]
    assert TrainConfig.from_dict(json.loads((out / "train_config.json").read_text())).max_steps \
        == 30
    # Only the last two checkpoints stay.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-20", "step-30"]


def test_the_adapter_loads_with_peft_and_changes_the_model(
        trained: tuple[Path, dict[str, Any]], tiny_model_dir: Path, tokenizer: Any) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = trained
    ids = encode(tokenizer, *PAIRS[0])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    before = logits(base, ids)
    tuned = PeftModel.from_pretrained(base, out).eval()
    assert not torch.allclose(logits(tuned, ids), before, atol=1e-3)
    assert AutoTokenizer.from_pretrained(out).chat_template == tokenizer.chat_template


def test_merge_gives_the_logits_of_base_plus_adapter(
        trained: tuple[Path, dict[str, Any]], tiny_model_dir: Path, tokenizer: Any,
        tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _ = trained
    ids = encode(tokenizer, *PAIRS[1])
    with_adapter = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), out).eval()
    merged_dir = merge(tiny_model_dir, out, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert torch.allclose(logits(merged, ids), logits(with_adapter, ids), atol=1e-4)
    assert (merged_dir / "tokenizer.json").is_file()
    assert not (merged_dir / "adapter_config.json").exists()


@pytest.mark.parametrize("broken", ["missing", "no_config", "no_weights"])
def test_merge_refuses_a_folder_that_is_not_an_adapter(
        broken: str, trained: tuple[Path, dict[str, Any]], tiny_model_dir: Path,
        tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    if broken != "missing":
        adapter.mkdir()
        keep = "adapter_model.safetensors" if broken == "no_config" else "adapter_config.json"
        (adapter / keep).write_bytes((trained[0] / keep).read_bytes())
    with pytest.raises(TrainingError, match="adapter"):
        merge(tiny_model_dir, adapter, tmp_path / "merged")


def test_grad_accumulation_is_exactly_a_bigger_batch(
        tiny_model_dir: Path, rows: list[Row], tmp_path: Path) -> None:
    """batch 4 x accum 1 and batch 2 x accum 2 see the same rows per step; the loss is divided by
    the window's label tokens, so loss, gradient norm and weights agree (rows differ in length,
    so dividing per micro-batch would not). Dropout off: its masks depend on the batch shape.
    In float64, where the order of a sum moves the result by ~1e-16, not ~1e-7: Adam divides by
    the root of tiny second moments, so float32 rounding that differs between CPUs' kernels
    (AVX-512, AMX) moves some weights by ~1e-5 after two steps."""
    runs = {}
    for batch_size, accum in ((4, 1), (2, 2)):
        config = TrainConfig(**{**EXACT, "max_steps": 2, "batch_size": batch_size,
                                "grad_accum": accum, "dropout": 0.0})
        out = tmp_path / f"b{batch_size}"
        runs[accum] = train(config, tiny_model_dir, rows, [], out, progress=False), out
    for one, two in zip(runs[1][0]["train"], runs[2][0]["train"], strict=True):
        assert one["label_tokens"] == two["label_tokens"]
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-9)
        assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-9)
    from safetensors.torch import load_file

    a, b = (load_file(out / "adapter_model.safetensors") for _, out in runs.values())
    assert a and a.keys() == b.keys(), "both runs saved the same, non-empty adapter"
    assert all(a[k].dtype == torch.float64 for k in a)
    assert all(torch.allclose(a[k], b[k], rtol=1e-9, atol=1e-9) for k in a)


def test_gradient_checkpointing_changes_memory_not_the_math(
        tiny_model_dir: Path, rows: list[Row], tmp_path: Path) -> None:
    """Recomputed activations give the same losses and gradient norms step for step."""
    runs = []
    for checkpointing in (False, True):
        config = TrainConfig(**{**EXACT, "max_steps": 2, "batch_size": 4, "dropout": 0.0,
                                "gradient_checkpointing": checkpointing})
        runs.append(train(config, tiny_model_dir, rows, [], tmp_path / str(checkpointing),
                          progress=False)["train"])
    for plain, recomputed in zip(*runs, strict=True):
        assert recomputed["loss"] == pytest.approx(plain["loss"], rel=1e-9)
        assert recomputed["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-9)


def test_resume_continues_exactly_where_the_checkpoint_left_off(
        tiny_model_dir: Path, rows: list[Row], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Run A trains 4 steps straight. Run B dies right after its step-2 checkpoint (as if
    killed) and a fresh call resumes it: steps 3-4 match A. Six rows in batches of 2 make step 4
    the first of epoch 2, and dropout stays on, so data position and RNG state both matter."""
    config = TrainConfig(**{**QUICK, "max_steps": 4, "batch_size": 2, "save_every": 2,
                            "eval_every": 2})
    straight = train(config, tiny_model_dir, rows[:6], rows[6:], tmp_path / "a", progress=False)

    class Killed(Exception):
        pass

    save = checkpoint.save

    def save_then_die(*args: Any, **kwargs: Any) -> None:
        save(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        train(config, tiny_model_dir, rows[:6], rows[6:], tmp_path / "b", progress=False)
    monkeypatch.setattr(checkpoint, "save", save)
    with pytest.raises(TrainingError, match="earlier run"):  # no silent restart over it
        train(config, tiny_model_dir, rows[:6], rows[6:], tmp_path / "b", progress=False)
    resumed = train(config, tiny_model_dir, rows[:6], rows[6:], tmp_path / "b", resume=True,
                    progress=False)

    assert [e["step"] for e in resumed["train"]] == [1, 2, 3, 4]
    for a, b in zip(straight["train"], resumed["train"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["lr"] == pytest.approx(a["lr"])
    assert [e["step"] for e in resumed["eval"]] == [0, 2, 4]
    assert resumed["final_eval_loss"] == pytest.approx(straight["final_eval_loss"], abs=1e-5)


def test_resume_refuses_changed_settings_and_an_empty_folder(
        tiny_model_dir: Path, rows: list[Row], tmp_path: Path) -> None:
    config = TrainConfig(**{**QUICK, "max_steps": 1, "batch_size": 4})
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(config, tiny_model_dir, rows, [], tmp_path, resume=True, progress=False)
    train(config, tiny_model_dir, rows, [], tmp_path, progress=False)
    changed = TrainConfig(**{**QUICK, "max_steps": 2, "batch_size": 2, "rank": 8})
    with pytest.raises(ConfigError, match="batch_size, rank"):
        train(changed, tiny_model_dir, rows, [], tmp_path, resume=True, progress=False)


def test_packed_rows_are_scored_as_if_separate(
        tiny_model_dir: Path, tokenizer: Any, tmp_path: Path) -> None:
    """Position ids restarting at 0 give a block-diagonal mask, and the last token of one
    example is not asked to predict the first of the next: packing changes no loss (every token
    is labelled here, so that boundary would count if it were not skipped)."""
    first, second = (encode(tokenizer, *pair) for pair in PAIRS[:2])
    config = TrainConfig(**{**QUICK, "max_steps": 1})
    separate = train(config, tiny_model_dir, [make_row(first)],
                     [make_row(first, prompt=0), make_row(second, prompt=0)], tmp_path / "s",
                     progress=False)
    packed = train(config, tiny_model_dir, [make_row(first)],
                   [make_row(first, second, prompt=0)], tmp_path / "p", progress=False)
    assert packed["base_eval_loss"] == pytest.approx(separate["base_eval_loss"], rel=1e-5)


@pytest.mark.parametrize(("train_rows", "message"), [
    ([], "no training rows"),
    ([Row([1, 2, 3], [1, 2], [0, 1, 2])], "same, non-zero length"),
    ([Row(list(range(600)), list(range(600)), list(range(600)))], "max_length 512"),
])
def test_bad_rows_are_refused_before_loading_anything(
        train_rows: list[Row], message: str, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=message):
        train(TrainConfig(), tmp_path / "no-model", train_rows, [], tmp_path, progress=False)


def test_a_missing_base_model_is_a_training_error(rows: list[Row], tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"config\.json"):
        train(TrainConfig(**QUICK), tmp_path / "no-model", rows, [], tmp_path / "out",
              progress=False)


# --- two processes (torchrun, gloo) ----

DDP_SCRIPT = """
import json, sys
from pathlib import Path
import torch.distributed as dist
from training import checkpoint
from training.config import TrainConfig
from training.loop import train
from training.types import Row

model, rows_file, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
rows = [Row(**r) for r in json.loads(rows_file.read_text())]
config = TrainConfig(**json.loads(sys.argv[4]))
metrics = train(config, model, rows, rows[:3], out / "run", progress=False)
assert not dist.is_initialized()  # train tore down the group it made
import os
(out / f"rank-{os.environ['RANK']}.json").write_text(json.dumps(metrics))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_process_ddp_matches_one_process_with_the_whole_batch(
        tiny_model_dir: Path, rows: list[Row], tmp_path: Path) -> None:
    """2 ranks x batch 2 = 1 process x batch 4: rank r gets rows r, r+2 of each group of four,
    the label count is summed over ranks, so the losses and gradient norms are the single
    process's; both ranks end with the same weights, and only rank 0 writes the outputs."""
    settings = {**EXACT, "max_steps": 2, "batch_size": 2, "dropout": 0.0}
    script, rows_file = tmp_path / "ddp_train.py", tmp_path / "rows.json"
    script.write_text(DDP_SCRIPT)
    rows_file.write_text(json.dumps([vars(r) for r in rows]))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script),
         str(tiny_model_dir), str(rows_file), str(tmp_path), json.dumps(settings)],
        cwd=ROOT, env={**_env(), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2 and ranks[0]["rank_weight_max_diff"] == 0.0
    assert ranks[0]["train"][0]["tokens"] == ranks[1]["train"][0]["tokens"]  # global counts
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()

    single = train(TrainConfig(**{**settings, "batch_size": 4}), tiny_model_dir, rows, rows[:3],
                   tmp_path / "single", progress=False)
    for one, two in zip(single["train"], ranks[0]["train"], strict=True):
        assert two["label_tokens"] == one["label_tokens"]
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-9)
        assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-9)
    assert ranks[0]["final_eval_loss"] == pytest.approx(single["final_eval_loss"], rel=1e-9)


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items()
            if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}


def test_the_loss_over_label_positions_only_is_the_full_logits_loss(
        tiny_model_dir: Path, rows: list[Row], monkeypatch: pytest.MonkeyPatch) -> None:
    """The output head runs on label positions only; the loss and its gradient are unchanged
    (in float64, so that the tolerance holds whatever kernels the CPU picks)."""
    from transformers import AutoModelForCausalLM

    from training import loop
    from training.examples import collate

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    batch = collate(rows[:3], pad_id=0)
    targets = loop._targets(batch)
    results = []
    for sliced in (True, False):
        monkeypatch.setattr(loop, "LOGITS_BY_MASK", sliced)
        model.zero_grad()
        loss = loop._loss_sum(model, batch, targets, torch.device("cpu"))
        loss.backward()
        grad = model.model.embed_tokens.weight.grad
        assert grad is not None
        results.append((float(loss), grad.clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-12)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-10, atol=1e-12)
