"""`supportbot train`, `merge`, `export-gguf` and `export`: from stored and historical
conversations to an adapter the bot serves. The only part of the bot that imports `training/`,
inside the commands, so that the other commands never load it."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from bot.cli.common import err, faq_index, out, quiet_transformers, settings_of, user_errors
from bot.settings import BUNDLED_GENERATOR, Settings

if TYPE_CHECKING:
    from training.config import TrainConfig
    from training.types import Conversation

FORMATS = ("auto", "messages", "csv", "taskmaster")


def _train_config(overrides: dict[str, Any], pairs: list[str]) -> TrainConfig:
    """TrainConfig from the explicit options and --set KEY=VALUE pairs (values read as JSON)."""
    from training.config import TrainConfig
    from training.errors import ConfigError

    values = {k: v for k, v in overrides.items() if v is not None}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair}: expected KEY=VALUE")
        try:
            values[key.strip().replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip().replace("-", "_")] = raw
    return TrainConfig.from_dict({**TrainConfig().to_dict(), **values})


def _base_model(settings: Settings, base_model: str | None) -> Path:
    """A local folder of the base model (the bundled GGUF is converted once, as for serving)."""
    from bot.errors import ModelError
    from bot.generation.bundled import resolve_model_path

    path = resolve_model_path(base_model or settings.model.base_model, settings.model.cache_dir)
    if not Path(path).is_dir():
        raise ModelError(f"base model '{path}' is not a local folder (there is no model hub "
                         "here): point --base-model or model.base_model at one")
    return Path(path)


def _grounded(settings: Settings, base_model: Path, seed: int) -> list[Conversation]:
    """The bot's own prompts for every FAQ phrasing, with the answers as targets."""
    from transformers import AutoTokenizer

    from bot.runtime import outside_questions
    from training.grounded import GroundedConfig, GroundedStats, grounded_conversations

    index = faq_index(settings)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    persona = settings.persona
    config = GroundedConfig(
        system=persona.render(persona.system_prompt), fallback=persona.render(
            persona.fallback_text),
        budget=settings.model.context_tokens - settings.model.generation.max_new_tokens,
        top_k=settings.retrieval.top_k, suggest_threshold=settings.retrieval.suggest_threshold,
        scoring=settings.retrieval.scoring, outside=tuple(outside_questions(settings)),
        lexical=settings.retrieval.lexical,
        prompt_entries=settings.dialogue.prompt_entries,
        prompt_floor=settings.dialogue.prompt_floor,
        phrasings=settings.dialogue.prompt_phrasings,
        # The right entry at every place the prompt has, and each question once without it:
        # the model learns to pick the entry that answers, or to say it does not know.
        rotations=settings.dialogue.prompt_entries, negatives=True, seed=seed)
    stats = GroundedStats()
    made = grounded_conversations(
        index.entries, index.embedder, config,
        lambda p: len(tokenizer.apply_chat_template(p, tokenize=True)), stats)
    err.print(f"[dim]grounded FAQ examples: {stats.answer} answers (+{stats.rotated} with the "
              f"entry moved), {stats.fallback} fallbacks (+{stats.negative} with the entry left "
              f"out); {stats.not_asked} phrasings the bot would not generate for[/]")
    return made


def train(ctx: typer.Context,
          inputs: Annotated[list[Path] | None, typer.Argument(
              help="Transcript files or folders: messages JSONL, question/answer CSV, "
                   "Taskmaster JSON (see --format).", show_default=False)] = None,
          output: Annotated[Path, typer.Option("--out", "-o", help="Folder for the adapter, "
                                               "checkpoints, reports and plots.")] = Path(
              "adapters/latest"),
          grounded: Annotated[bool, typer.Option(
              "--grounded", help="Also train on the configured FAQ's grounded examples: the "
              "bot's own prompts for each phrasing, the entry's answer as target.")] = False,
          fmt: Annotated[str, typer.Option("--format", help=f"One of {', '.join(FORMATS)}."
                                           )] = "auto",
          on_error: Annotated[str, typer.Option(help="A malformed record: skip (counted in the "
                                                "data report) or fail.")] = "skip",
          base_model: Annotated[str | None, typer.Option(
              help="Base model folder (default: model.base_model).")] = None,
          max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (wins over "
                                                        "--epochs).")] = None,
          epochs: Annotated[int | None, typer.Option(help="Passes over the data.")] = None,
          batch_size: Annotated[int | None, typer.Option(
              help="Rows per micro-batch (default 1; --set grad_accum=N of them, default 8, "
                   "make a step).")] = None,
          learning_rate: Annotated[float | None, typer.Option(
              "--lr", help="Peak learning rate.")] = None,
          rank: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
          max_length: Annotated[int | None, typer.Option(help="Tokens per row.")] = None,
          seed: Annotated[int | None, typer.Option(
              help="Seeds the split, LoRA init and order.")] = None,
          settings_pairs: Annotated[list[str] | None, typer.Option(
              "--set", help="Any other TrainConfig field, KEY=VALUE (docs/training.md).")] = None,
          resume: Annotated[bool, typer.Option(
              help="Continue from the newest complete checkpoint in --out (after a stop "
                   "signal, a time limit or a crash), with the same settings.")] = False,
          dry_run: Annotated[bool, typer.Option(help="Prepare the data and print its report; "
                                                "do not train.")] = False,
          samples: Annotated[int, typer.Option(min=0, help="Held-out conversations to answer "
                                               "with the base model and the adapter, side by "
                                               "side (samples.md).")] = 3) -> None:
    """Fine-tune the model with LoRA on support transcripts (CPU, or a GPU with bf16)."""
    with user_errors():
        from training.errors import ConfigError

        if fmt not in FORMATS:
            raise ConfigError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}")
        if on_error not in ("skip", "fail"):
            raise ConfigError(f"--on-error: '{on_error}' is not skip or fail")
        if not inputs and not grounded:
            raise ConfigError("nothing to train on: give transcript files, --grounded, or both")
        settings = settings_of(ctx)
        quiet_transformers()
        config = _train_config({
            "max_steps": max_steps, "epochs": epochs, "batch_size": batch_size,
            "learning_rate": learning_rate, "rank": rank, "max_length": max_length,
            "seed": seed}, settings_pairs or [])
        base = _base_model(settings, base_model)
        extra = _grounded(settings, base, config.seed) if grounded else []
        from bot.safety.build import redactor_for
        from training.pipeline import prepare

        persona = settings.persona
        prepared = prepare(inputs or [], base, config, fmt, on_error, extra_conversations=extra,
                           system=persona.render(persona.system_prompt),
                           redactor=redactor_for(settings.safety))
        from training import memory
        from training.loop import dist_env
        from training.loop import train as run

        # Under torchrun every process prepares the same data (it is deterministic); only the
        # first one writes and prints.
        main = dist_env().main
        needed, available = memory.plan(config, base, prepared.train_rows)
        if main:
            err.print(prepared.report.table())
            output.mkdir(parents=True, exist_ok=True)
            prepared.report.write(output / "data_report.json")
            err.print(escape(needed.line(available)))
        if dry_run:
            out.print(f"data report: {output / 'data_report.json'} (dry run: not trained)")
            return
        if config.memory_check:
            memory.check(needed, available)  # before the model is loaded, not after swapping
        from training.errors import TrainingInterrupted

        try:
            metrics = run(config, base, prepared.train_rows, prepared.eval_rows, output,
                          resume=resume, pad_id=prepared.pad_id)
        except TrainingInterrupted as stopped:
            if main:
                err.print(escape(f"{stopped}; continue with: {_resume_command()}"))
            raise typer.Exit(stopped.exit_status) from None
        if not main:
            return
        _show_metrics(metrics, output)
        if base_model is None and settings.model.base_model == BUNDLED_GENERATOR:
            # The bundled model is a GGUF file: its adapter for llama.cpp costs a second.
            from bot.generation.bundled import bundled_gguf
            from training.gguf_adapter import export_gguf_adapter

            written = export_gguf_adapter(output, bundled_gguf())
            out.print(f"[dim]llama.cpp adapter (model.backend llama_cpp): {written}[/]")
        if samples and prepared.eval_conversations:
            from training.samples import sample_replies, write_samples

            made = sample_replies(base, output, prepared.eval_conversations, samples)
            write_samples(made, output)
            for sample in made:
                question = sample["prompt"][-1]["content"]
                out.print(f"[bold]customer[/]: {escape(question[-200:])}\n"
                          f"  [dim]agent:[/]   {escape(sample['reference'])}\n"
                          f"  [dim]base:[/]    {escape(sample['base'])}\n"
                          f"  [dim]adapter:[/] {escape(sample['adapter'])}")


def _resume_command() -> str:
    """The command line that was run, with --resume (under torchrun: its own command line)."""
    args = sys.argv[1:]
    command = shlex.join(["supportbot", *args, *([] if "--resume" in args else ["--resume"])])
    from training.loop import dist_env

    if dist_env().world_size > 1:
        return f"the same torchrun command with --resume ({command})"
    return command


def _show_metrics(metrics: dict[str, Any], output: Path) -> None:
    """The eval loss before and after, and where the adapter is."""
    base, final = metrics.get("base_eval_loss"), metrics.get("final_eval_loss")
    if base is not None and final is not None:
        out.print(f"eval loss {base:.3f} -> {final:.3f} "
                  f"(perplexity {metrics.get('final_eval_perplexity', float('nan')):.2f})")
    out.print(f"adapter: {escape(str(output))}  [dim](serve it: model.adapter: {output}; "
              f"loss curve {output / 'loss.png'})[/]")


def merge(ctx: typer.Context,
          adapter: Annotated[Path, typer.Argument(help="Adapter folder from `train`.")],
          output: Annotated[Path, typer.Option("--out", "-o", help="Folder for the merged "
                                               "model.")],
          base_model: Annotated[str | None, typer.Option(
              help="Base model folder (default: model.base_model).")] = None) -> None:
    """Merge a LoRA adapter into its base model and save the full model (for any server)."""
    with user_errors():
        settings = settings_of(ctx)
        quiet_transformers()
        from training.merge import merge as run

        folder = run(_base_model(settings, base_model), adapter, output)
    out.print(f"merged model: {escape(str(folder))}  [dim](serve it: model.base_model: "
              f"{folder})[/]")


def export_gguf(ctx: typer.Context,
                adapter: Annotated[Path, typer.Argument(help="Adapter folder from `train`.")],
                base_gguf: Annotated[Path | None, typer.Option(
                    "--base", help="GGUF file of the base model (default: model.base_model's; "
                    "the bundled model's GGUF)." )] = None,
                output: Annotated[Path | None, typer.Option(
                    "--out", "-o", help="File to write (default: ADAPTER/adapter.gguf, where "
                    "model.backend llama_cpp finds it).")] = None) -> None:
    """Convert a LoRA adapter for llama.cpp (model.backend llama_cpp, llama.cpp's server)."""
    with user_errors():
        settings = settings_of(ctx)
        from bot.generation.llama_cpp_generator import gguf_path
        from training.gguf_adapter import export_gguf_adapter

        written = export_gguf_adapter(adapter, base_gguf or gguf_path(settings.model.base_model),
                                      output)
    out.print(f"llama.cpp adapter: {escape(str(written))}  [dim](serve it: model.backend: "
              f"llama_cpp, model.adapter: {adapter})[/]")


def export(ctx: typer.Context,
           output: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write.")
                             ] = Path("exports/conversations.jsonl")) -> None:
    """Write rated conversations from the database as training data (messages JSONL)."""
    with user_errors():
        settings = settings_of(ctx)
        from bot.export import export as run
        from bot.safety.build import redactor_for
        from bot.storage import ConversationStore

        redactor = redactor_for(settings.safety)  # the one stored conversations go through

        async def go() -> Any:
            store = ConversationStore(settings.storage.database_url)
            try:
                await store.init()
                return await run(store, output, redactor.redact_text)
            finally:
                await store.close()

        stats = asyncio.run(go())
    out.print(f"exported {stats.conversations} conversations ({stats.trained_turns} answers to "
              f"learn, {stats.context_turns} as context) to {escape(str(output))}")
    err.print(f"[dim]left out: {stats.dropped_down_rated} answers rated down, "
              f"{stats.dropped_fixed_replies} fixed replies, {stats.skipped_conversations} "
              "conversations with nothing left to learn[/]")
