"""The generation backends side by side on the bundled SmolLM2-135M, each against its baseline.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_backends.py [--tokens 64] [--adapter DIR]

All in one run, greedy, the same 8 support questions (with the bot's system prompt):
1. one stream: the llama_cpp backend against raw llama-cpp-python on the same GGUF (goal
   >= 0.9x; medians of 3 interleaved rounds), and against the transformers backend (DESIGN.md:
   about 6x with all cores);
2. the openai backend against the same server called directly with httpx (goal >= 0.9x); the
   server is llama-cpp-python's own, on the same GGUF, started here on 127.0.0.1;
3. aggregate tokens/s with 8 conversations at once, for each backend as the bot runs it
   (BatchingGenerator: transformers in batches of 8, llama.cpp one sequence at a time, openai
   8 requests in flight);
4. agreement: greedy replies of llama_cpp against transformers, without and with a LoRA adapter
   (--adapter, converted with `supportbot export-gguf` into a temp folder; without it, a seeded
   random adapter): replies identical, and the shared beginning in characters.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_generation import QUESTIONS, concurrently
from common import ENV

THREADS = 1  # llama.cpp's threads, on every llama.cpp side alike: --threads


def prompts() -> list[list[dict[str, str]]]:
    from bot.settings import Settings

    persona = Settings().persona
    system = persona.render(persona.system_prompt)
    return [[{"role": "system", "content": system}, {"role": "user", "content": q}]
            for q in QUESTIONS]


def rate(run: Any, count: Any, items: list[Any]) -> float:
    """Tokens/s over the items one after another: run(item) generates, count() reads a total."""
    before, started = count(), time.perf_counter()
    for item in items:
        run(item)
    return (count() - before) / (time.perf_counter() - started)


def one_stream(tokens: int) -> dict[str, float]:
    from llama_cpp import Llama

    from bot.generation.bundled import bundled_gguf
    from bot.generation.llama_cpp_generator import LlamaCppGenerator
    from bot.generation.transformers_generator import TransformersGenerator
    from bot.settings import GenerationSettings, Settings

    params = GenerationSettings(max_new_tokens=tokens, repetition_penalty=1.0)
    penalised = params.model_copy(update={"repetition_penalty": 1.05})
    chats = prompts()
    ours = LlamaCppGenerator.load("SmolLM2-135M-Instruct", threads=THREADS)
    raw = Llama(model_path=str(bundled_gguf()), n_ctx=2048, n_threads=THREADS,
                n_threads_batch=THREADS, verbose=False)
    texts = [ours.render(c) for c in chats]
    raw_count = [0]

    def raw_run(text: str) -> None:
        for _ in raw.create_completion(text, max_tokens=tokens, temperature=0.0, stream=True,
                                       stop=["<|im_end|>"]):
            raw_count[0] += 1

    def ours_run(chat: Any, settings: Any = params) -> None:
        ours.generate([chat], settings, on_text=lambda row, piece: None)

    raw_run(texts[0])  # warm-up: the first call pays for memory mapping
    ours_run(chats[0])
    rounds: dict[str, list[float]] = {"llama_raw": [], "llama_backend": [],
                                      "llama_backend_penalty": []}
    for _ in range(3):  # interleaved, medians: a busy moment hits both sides alike
        rounds["llama_raw"].append(rate(raw_run, lambda: raw_count[0], texts))
        rounds["llama_backend"].append(rate(ours_run, lambda: ours.tokens_generated, chats))
        rounds["llama_backend_penalty"].append(rate(lambda c: ours_run(c, penalised),
                                                    lambda: ours.tokens_generated, chats))
    result = {name: statistics.median(values) for name, values in rounds.items()}
    settings = Settings()
    hf = TransformersGenerator.load(settings.model.base_model, cache_dir=settings.model.cache_dir)
    hf.generate([chats[0]], params)  # warm-up
    result["transformers_backend"] = rate(
        lambda c: hf.generate([c], params, on_text=lambda row, piece: None),
        lambda: hf.tokens_generated, chats)
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(gguf: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", str(THREADS),
         "--n_threads_batch", str(THREADS),
         # Off: by default a new request cuts the running stream short (one request at a time).
         "--interrupt_requests", "false"], env=ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit("llama_cpp.server did not start in 120 s")


def direct_stream(client: Any, base: str, chat: Any, tokens: int) -> int:
    """One streamed request with httpx and nothing else: the pieces received."""
    body = {"model": "bundled", "messages": chat, "max_tokens": tokens, "temperature": 0.0,
            "stream": True}
    pieces = 0
    with client.stream("POST", f"{base}/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0].get("delta", {})
                pieces += bool(delta.get("content"))
    return pieces


def server_figures(tokens: int) -> dict[str, float]:
    import httpx

    from bot.generation.batching import BatchingGenerator
    from bot.generation.bundled import bundled_gguf
    from bot.generation.openai_generator import OpenAIGenerator
    from bot.settings import GenerationSettings, OpenAISettings

    params = GenerationSettings(max_new_tokens=tokens, repetition_penalty=1.0)
    chats = prompts()
    server, base = start_server(bundled_gguf())
    try:
        client = httpx.Client(timeout=120)
        count = [0]
        ours = OpenAIGenerator.from_settings(OpenAISettings(base_url=base), 2048)
        direct_stream(client, base, chats[0], tokens)  # warm-up
        result = {
            "server_direct": rate(
                lambda c: count.__setitem__(0, count[0] + direct_stream(client, base, c, tokens)),
                lambda: count[0], chats),
            "openai_backend": rate(lambda c: ours.generate([c], params,
                                                          on_text=lambda row, piece: None),
                                   lambda: ours.tokens_generated, chats)}
        batching = BatchingGenerator(ours, 1, 0.0, workers=len(chats))
        before = ours.tokens_generated
        seconds = concurrently(batching, chats, params)
        result["openai_8_conversations"] = (ours.tokens_generated - before) / seconds
        batching.close()
        ours.close()
        return result
    finally:
        server.kill()
        server.wait()


def eight_conversations(tokens: int) -> dict[str, float]:
    from bot.generation.batching import BatchingGenerator
    from bot.generation.llama_cpp_generator import LlamaCppGenerator
    from bot.generation.transformers_generator import TransformersGenerator
    from bot.settings import GenerationSettings, Settings

    params = GenerationSettings(max_new_tokens=tokens, repetition_penalty=1.0)
    chats = prompts()
    settings = Settings()
    hf = TransformersGenerator.load(settings.model.base_model, cache_dir=settings.model.cache_dir)
    llama = LlamaCppGenerator.load("SmolLM2-135M-Instruct", threads=THREADS)
    result = {}
    for name, inner, batch, window in (("transformers", hf, 8, 0.25), ("llama_cpp", llama, 1, 0)):
        batching = BatchingGenerator(inner, batch, window)
        batching.generate([chats[0]], params)  # warm-up
        before = inner.tokens_generated
        seconds = concurrently(batching, chats, params)
        result[f"{name}_8_conversations"] = (inner.tokens_generated - before) / seconds
        batching.close()
    return result


def shared_start(a: str, b: str) -> int:
    size = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        size += 1
    return size


def agreement(adapter: Path | None, work: Path) -> dict[str, Any]:
    from bot.generation.bundled import bundled_gguf
    from bot.generation.llama_cpp_generator import LlamaCppGenerator
    from bot.generation.transformers_generator import TransformersGenerator
    from bot.settings import GenerationSettings, Settings
    from training.gguf_adapter import export_gguf_adapter

    if adapter is None:
        adapter = random_adapter(work / "random-adapter")
    else:  # a copy, so that the user's folder gets no adapter.gguf from a benchmark
        adapter = Path(shutil.copytree(adapter, work / "adapter",
                                       ignore=shutil.ignore_patterns("checkpoints")))
    export_gguf_adapter(adapter, bundled_gguf())
    params = GenerationSettings(max_new_tokens=48)  # the defaults: repetition penalty 1.05
    chats = prompts()
    cache = Settings().model.cache_dir
    result: dict[str, Any] = {}
    for name, folder in (("base", None), ("adapter", adapter)):
        hf = TransformersGenerator.load("SmolLM2-135M-Instruct", adapter=folder,
                                        cache_dir=cache, device="cpu")
        llama = LlamaCppGenerator.load("SmolLM2-135M-Instruct", adapter=folder,
                                       threads=THREADS)
        theirs = [hf.generate([c], params)[0][0] for c in chats]
        ours = [llama.generate([c], params)[0][0] for c in chats]
        shared = [shared_start(a, b) / max(len(a), 1) for a, b in zip(ours, theirs, strict=True)]
        result[name] = {"identical": sum(a == b for a, b in zip(ours, theirs, strict=True)),
                        "of": len(chats), "shared_start": sum(shared) / len(shared),
                        "pairs": list(zip(theirs, ours, strict=True))}
    return result


def random_adapter(folder: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from bot.generation.bundled import resolve_model_path
    from bot.settings import Settings

    torch.manual_seed(0)
    base = resolve_model_path("SmolLM2-135M-Instruct", Settings().model.cache_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=8, lora_alpha=16, init_lora_weights=False, target_modules="all-linear"))
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.mul_(0.5)
    model.save_pretrained(str(folder))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens per generation")
    parser.add_argument("--adapter", type=Path, help="a LoRA adapter folder from "
                        "`supportbot train` for the agreement figure (default: a random one)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads, backend, "
                        "raw and server alike (default: the backend's own, all cores but one; "
                        "transformers always uses all cores)")
    args = parser.parse_args()
    from bot.generation.llama_cpp_generator import default_threads

    global THREADS
    THREADS = args.threads or default_threads()
    figures: dict[str, Any] = {"threads": THREADS}
    figures.update(one_stream(args.tokens))
    figures.update(server_figures(args.tokens))
    figures.update(eight_conversations(args.tokens))
    with tempfile.TemporaryDirectory() as work:
        figures["agreement"] = agreement(args.adapter, Path(work))
    f = figures
    print(f"one stream, {args.tokens} tokens, tokens/s (llama.cpp: {THREADS} threads of "
          f"{len(os.sched_getaffinity(0))} cores):")
    print(f"  llama_cpp backend      {f['llama_backend']:7.1f}   raw llama-cpp-python "
          f"{f['llama_raw']:7.1f}   ratio {f['llama_backend'] / f['llama_raw']:.2f} (goal >= 0.9)")
    print(f"  with repetition penalty 1.05 (transformers' rule): {f['llama_backend_penalty']:.1f}")
    print(f"  transformers backend   {f['transformers_backend']:7.1f}   llama_cpp / transformers "
          f"{f['llama_backend'] / f['transformers_backend']:.2f}x")
    print(f"  openai backend         {f['openai_backend']:7.1f}   the same server directly "
          f"{f['server_direct']:7.1f}   ratio {f['openai_backend'] / f['server_direct']:.2f} "
          "(goal >= 0.9)")
    print("8 conversations at once, tokens/s in all:")
    for name in ("transformers", "llama_cpp", "openai"):
        print(f"  {name:22} {f[f'{name}_8_conversations']:7.1f}")
    print("greedy replies, llama_cpp against transformers (48 tokens, repetition penalty 1.05):")
    for name in ("base", "adapter"):
        a = f["agreement"][name]
        print(f"  {name:8} identical {a['identical']}/{a['of']}, shared beginning "
              f"{a['shared_start']:.0%} of the characters")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
