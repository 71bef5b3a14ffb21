"""TransformersGenerator on a tiny random model: batch, n candidates, stream, adapter, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bot.errors import ModelError
from bot.generation.bundled import resolve_model_path
from bot.generation.transformers_generator import TransformersGenerator, pick_device
from bot.settings import GenerationSettings

GREEDY = GenerationSettings(temperature=0, max_new_tokens=12, repetition_penalty=1.0)
PROMPTS = [
    [{"role": "user", "content": "Where is my parcel?"}],
    [{"role": "system", "content": "You are the support assistant."},
     {"role": "user", "content": "How long does standard delivery take, and what about express?"}],
    [{"role": "user", "content": "return"}],
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> TransformersGenerator:
    return TransformersGenerator.load(str(tiny_model_dir), device="cpu")


def test_loads_from_a_folder_with_context_capped(tiny: TransformersGenerator,
                                                 tiny_model_dir: Path) -> None:
    assert tiny.context_tokens == 1024, "the model's own limit caps the default"
    capped = TransformersGenerator.load(str(tiny_model_dir), device="cpu", context_tokens=300)
    assert capped.context_tokens == 300
    assert str(tiny.device) == "cpu"
    assert tiny.count_tokens(PROMPTS[0]) > tiny.count_tokens([{"role": "user", "content": ""}])


def test_batch_equals_one_by_one(tiny: TransformersGenerator) -> None:
    batch = tiny.generate(PROMPTS, GREEDY)
    singles = [tiny.generate([p], GREEDY)[0] for p in PROMPTS]
    assert batch == singles
    assert all(len(c) == 1 and c[0] for c in batch)


def test_n_candidates_are_sampled(tiny: TransformersGenerator) -> None:
    torch.manual_seed(0)
    params = GREEDY.model_copy(update={"n": 4})
    assert params.sampling_temperature == params.candidate_temperature
    result = tiny.generate(PROMPTS[:2], params)
    assert [len(c) for c in result] == [4, 4]
    assert len(set(result[0])) > 1, "sampled candidates differ"


def test_stream_matches_generate(tiny: TransformersGenerator) -> None:
    pieces = list(tiny.stream(PROMPTS[1], GREEDY))
    assert len(pieces) > 1, "tokens arrive one piece at a time"
    assert "".join(pieces).strip() == tiny.generate([PROMPTS[1]], GREEDY)[0][0]


def test_stream_surfaces_errors(tiny: TransformersGenerator,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure inside the generating thread reaches the consumer instead of hanging it."""
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(tiny.model, "generate", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        list(tiny.stream(PROMPTS[0], GREEDY))


def test_lora_adapter_is_loaded_and_merged(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj",
                                                                                   "v_proj"]))
    torch.manual_seed(1)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter change something
            torch.nn.init.normal_(param, std=0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    inputs = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        expected = peft_model(inputs).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(inputs).logits
    tuned = TransformersGenerator.load(str(tiny_model_dir), adapter=tmp_path / "adapter",
                                       device="cpu")
    with torch.no_grad():
        got = tuned.model(inputs).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)


def test_bad_adapter_and_model_are_clear_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a peft adapter folder"):
        TransformersGenerator.load(str(tiny_model_dir), adapter=tmp_path, device="cpu")
    with pytest.raises(ModelError, match="cannot load model 'no-such/model-here'"):
        TransformersGenerator.load("no-such/model-here", device="cpu")


def test_device_choice() -> None:
    if torch.cuda.is_available():
        assert pick_device("auto")[0] == "cuda"
    else:
        assert pick_device("auto") == ("cpu", torch.float32)
        with pytest.raises(ModelError, match="no CUDA device"):
            pick_device("cuda")


def test_model_paths(tmp_path: Path, tiny_model_dir: Path) -> None:
    assert resolve_model_path(str(tiny_model_dir), tmp_path) == tiny_model_dir.resolve()
    assert resolve_model_path("org/model", tmp_path) == "org/model"
