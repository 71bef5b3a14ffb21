"""Replies of the base model and of the trained adapter to held-out conversations, side by side.

Loss figures say the adapter fits the data better; these samples show what that looks like:
for a few eval conversations, the prompt up to an agent's reply, the reply the agent really
wrote, and what each model writes there (greedy).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.types import Conversation


def prompts(conversations: Sequence[Conversation], n: int) -> list[tuple[list[dict[str, str]],
                                                                           str]]:
    """Up to `n` (chat prompt, reference reply) pairs: each conversation cut before its first
    trained assistant turn that follows a user turn."""
    pairs = []
    for conversation in conversations:
        turns = conversation.turns
        for i, turn in enumerate(turns):
            if turn.role == "assistant" and turn.train and i and turns[i - 1].role == "user":
                pairs.append(([{"role": t.role, "content": t.content} for t in turns[:i]],
                              turn.content))
                break
        if len(pairs) == n:
            break
    return pairs


def sample_replies(base_model: Path, adapter: Path, conversations: Sequence[Conversation],
                   n: int = 3, max_new_tokens: int = 60) -> list[dict[str, Any]]:
    """Greedy replies of the base model and of base + adapter to the same prompts."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(adapter))
    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=torch.float32)
    model.eval()
    pairs = prompts(conversations, n)

    def replies(m: Any) -> list[str]:
        texts = []
        for messages, _ in pairs:
            ids: Any = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                     return_tensors="pt", return_dict=True)
            with torch.no_grad():
                output = m.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            new = output[0, ids["input_ids"].shape[1]:]
            texts.append(str(tokenizer.decode(new, skip_special_tokens=True)).strip())
        return texts

    before = replies(model)
    tuned = PeftModel.from_pretrained(model, str(adapter))
    tuned.eval()
    after = replies(tuned)
    return [{"prompt": p, "reference": ref, "base": b, "adapter": a}
            for (p, ref), b, a in zip(pairs, before, after, strict=True)]


def write_samples(samples: list[dict[str, Any]], out: Path) -> None:
    """samples.json, and samples.md for a person to read."""
    (out / "samples.json").write_text(json.dumps(samples, indent=2, ensure_ascii=False),
                                      encoding="utf-8")
    lines = ["# Replies to held-out conversations: base model vs adapter (greedy)", ""]
    for i, s in enumerate(samples, 1):
        lines.append(f"## {i}")
        lines += [f"> **{m['role']}**: {m['content']}" for m in s["prompt"][-4:]]
        lines += ["", f"- **agent (reference)**: {s['reference']}",
                  f"- **base model**: {s['base']}", f"- **adapter**: {s['adapter']}", ""]
    (out / "samples.md").write_text("\n".join(lines), encoding="utf-8")
