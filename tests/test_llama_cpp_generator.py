"""The llama.cpp backend on the bundled GGUF, and LoRA adapters converted for it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.errors import ModelError
from bot.generation.bundled import bundled_gguf
from bot.generation.llama_cpp_generator import (
    LlamaCppGenerator,
    _RepetitionPenalty,
    adapter_gguf,
    gguf_path,
)
from bot.settings import GenerationSettings
from training.errors import TrainingError
from training.gguf_adapter import _permute, export_gguf_adapter

PROMPT = [{"role": "system", "content": "You are the support assistant of Acme."},
          {"role": "user", "content": "How do I reset my password?"}]
GREEDY = GenerationSettings(max_new_tokens=24)


@pytest.fixture(scope="module")
def llama() -> LlamaCppGenerator:
    return LlamaCppGenerator.load("SmolLM2-135M-Instruct", threads=2)


def test_repetition_penalty_follows_transformers_rule() -> None:
    scores = np.array([2.0, -2.0, 1.0, 4.0], dtype=np.float32)
    out = _RepetitionPenalty(2.0)([0, 1, 1, 7], scores.copy())  # 7: beyond the vocabulary
    assert out.tolist() == [1.0, -4.0, 1.0, 4.0]


def test_permute_matches_llama_cpp_row_order() -> None:
    # Two heads of 4 rows: llama.cpp interleaves each head's two halves.
    rows = np.arange(8).reshape(8, 1)
    assert _permute(rows, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_model_paths_are_checked(tmp_path: Path) -> None:
    assert gguf_path("SmolLM2-135M-Instruct") == bundled_gguf()
    with pytest.raises(ModelError, match=r"not a \.gguf file"):
        gguf_path(str(tmp_path / "model"))
    with pytest.raises(ModelError, match="supportbot export-gguf"):
        adapter_gguf(tmp_path)


@pytest.mark.slow
def test_streams_stops_and_samples_on_the_bundled_gguf(llama: LlamaCppGenerator,
                                                       bundled_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
    assert llama.render(PROMPT) == tokenizer.apply_chat_template(
        PROMPT, tokenize=False, add_generation_prompt=True), "the same prompt text as transformers"
    assert llama.count_tokens(PROMPT) == len(tokenizer(llama.render(PROMPT))["input_ids"])

    pieces: list[str] = []
    before = llama.tokens_generated
    [[text]] = llama.generate([PROMPT], GREEDY, on_text=lambda row, piece: pieces.append(piece))
    assert text and "".join(pieces).strip() == text
    assert 0 < llama.tokens_generated - before <= GREEDY.max_new_tokens
    assert llama.generate([PROMPT], GREEDY) == [[text]], "greedy decoding is repeatable"

    seen: list[str] = []
    [[short]] = llama.generate([PROMPT], GREEDY, on_text=lambda row, piece: seen.append(piece),
                               should_stop=lambda row: len(seen) >= 3)
    assert len(seen) == 3 and short == "".join(seen).strip() and text.startswith(short)

    sampled = llama.generate([PROMPT, PROMPT], GREEDY.model_copy(update={"n": 3}))
    assert [len(row) for row in sampled] == [3, 3] and all(all(row) for row in sampled)


@pytest.fixture(scope="module")
def random_adapter(bundled_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on every projection with random A and B: it changes what the model says."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(bundled_model_dir)
    config = LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                        "up_proj", "down_proj"])
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, weight in peft_model.named_parameters():
            if "lora_B" in name:
                weight.mul_(0.5)
    peft_model.save_pretrained(folder)
    return folder


def _first_token_logits_llama(text: str, lora: Path | None) -> np.ndarray:
    from llama_cpp import Llama

    model = Llama(model_path=str(bundled_gguf()), n_ctx=512, logits_all=True, verbose=False,
                  lora_path=str(lora) if lora else None)
    tokens = model.tokenize(text.encode(), add_bos=False, special=True)
    model.eval(tokens)
    return np.array(model.scores[len(tokens) - 1])


@pytest.mark.slow
def test_a_converted_adapter_computes_what_the_peft_adapter_computes(
        random_adapter: Path, llama: LlamaCppGenerator, bundled_model_dir: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = CliRunner().invoke(app, ["export-gguf", str(random_adapter)])
    assert result.exit_code == 0, result.output
    converted = random_adapter / "adapter.gguf"
    assert converted.is_file()

    text = llama.render(PROMPT)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(bundled_model_dir),
                                      random_adapter)
    ids = llama.llama.tokenize(text.encode(), add_bos=False, special=True)
    with torch.no_grad():
        reference = model(torch.tensor([ids])).logits[0, -1].numpy()
        with model.disable_adapter():
            base = model(torch.tensor([ids])).logits[0, -1].numpy()
    ours = _first_token_logits_llama(text, converted)
    effect = np.abs(reference - base).max()
    error = np.abs(ours - reference).max()
    # llama.cpp multiplies the 4-bit weights by 8-bit activations (the base model alone differs
    # from transformers by up to 0.75 here); a wrong layout (q and k rows not reordered as the
    # base GGUF's are) puts the adapted logits 5-6 away.
    assert effect > 3.0, "the adapter changes the next-token logits"
    assert error < 1.5, f"llama.cpp's logits are {error:.2f} away from peft's"

    adapted = LlamaCppGenerator.load("SmolLM2-135M-Instruct", adapter=random_adapter, threads=2)
    params = GenerationSettings(max_new_tokens=12)
    assert adapted.generate([PROMPT], params) != llama.generate([PROMPT], params)


def test_export_refuses_what_llama_cpp_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="not a peft LoRA adapter folder"):
        export_gguf_adapter(tmp_path, bundled_gguf())
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA",
                                                              "use_dora": True}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(TrainingError, match="DoRA"):
        export_gguf_adapter(tmp_path, bundled_gguf())


def test_export_names_a_tensor_with_no_llama_cpp_form(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA",
                                                              "lora_alpha": 16}))
    save_file({"base_model.model.lm_head.weight": np.zeros((4, 4), dtype=np.float32)},
              str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(TrainingError, match=r"lm_head\.weight is not a LoRA A or B matrix"):
        export_gguf_adapter(tmp_path, bundled_gguf())
    result = CliRunner().invoke(app, ["export-gguf", str(tmp_path)])
    assert result.exit_code == 1 and "lm_head.weight" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
async def test_the_bot_generates_with_the_llama_cpp_backend(config_file: Path) -> None:
    from bot.runtime import open_index, open_runtime
    from bot.settings import load_settings
    from bot.types import BotReply, Decision, TextEvent, UserMessage

    settings = load_settings(config_file)
    settings.model.backend = "llama_cpp"
    settings.retrieval.answer_threshold = 1.0  # the model answers every question
    settings.dialogue.middle = "generate"
    index, _ = open_index(settings)
    runtime = await open_runtime(settings, index)
    try:
        shown: list[str] = []
        reply = None
        async for event in runtime.manager.stream(UserMessage(
                "I'd like the same shoes in black, can I swap them", conversation_id="c")):
            if isinstance(event, TextEvent):
                shown.append(event.text)
            else:
                reply = event
        assert isinstance(reply, BotReply)
        assert reply.meta["model"] == "SmolLM2-135M-Instruct" and reply.meta["generated"]
        assert runtime.manager.tokens_generated > 0
        # Released only if every sentence passed the grounding check; else "Did you mean".
        assert reply.decision in (Decision.GENERATE, Decision.CLARIFY)
        assert "".join(shown) == reply.text
        stored = await runtime.store.last_bot_message("c")
        assert stored is not None and stored.text == reply.text
    finally:
        await runtime.close()


@pytest.mark.slow
def test_train_on_the_bundled_model_writes_an_adapter_llama_cpp_serves(
        tmp_path: Path, config_file: Path) -> None:
    from tests.conftest import SAMPLE_TRANSCRIPTS

    out = tmp_path / "adapter"
    result = CliRunner().invoke(app, [
        "--config", str(config_file), "train", str(SAMPLE_TRANSCRIPTS), "--out", str(out),
        "--max-steps", "1", "--batch-size", "1", "--max-length", "256", "--samples", "0"])
    assert result.exit_code == 0, result.output
    assert (out / "adapter.gguf").is_file() and "llama.cpp adapter" in result.output
    served = LlamaCppGenerator.load("SmolLM2-135M-Instruct", adapter=out, threads=2)
    assert served.generate([PROMPT], GenerationSettings(max_new_tokens=4))[0][0]
